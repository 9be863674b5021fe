"""The configuration reference, rendered from the settings classes in ``shared.config``.

``python -m shared.settings_doc > docs/configuration.md`` writes it; a unit test fails when the
file and the classes disagree. Each field's description is its ``description=`` or, when it has
none, the comment lines just above it in the source.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import sys
import tokenize
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from shared import config

COMMAND = "python -m shared.settings_doc > docs/configuration.md"
_CONSTRAINTS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def settings_classes() -> list[type[BaseSettings]]:
    """The settings classes defined in ``shared.config``, in source order."""
    found = [
        obj
        for obj in vars(config).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseSettings)
        and obj.__module__ == config.__name__
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def _comments(source: str) -> dict[int, str]:
    """Line number -> text of every comment that has a line of its own or ends a line."""
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    return comments


def _own_comment_lines(source: str) -> set[int]:
    lines = source.splitlines()
    return {number for number in _comments(source) if lines[number - 1].lstrip().startswith("#")}


def _field_nodes(cls: type[BaseSettings]) -> tuple[str, list[ast.AnnAssign]]:
    source = inspect.getsource(cls)
    tree = ast.parse(source)
    class_def = tree.body[0]
    assert isinstance(class_def, ast.ClassDef)
    nodes = [
        node
        for node in class_def.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    ]
    return source, nodes


def _comment_above(source: str, line: int) -> str:
    """The comment block right above ``line`` (no blank line between), plus a trailing one."""
    comments = _comments(source)
    own = _own_comment_lines(source)
    block: list[str] = []
    above = line - 1
    while above in own:
        block.insert(0, comments[above])
        above -= 1
    if line in comments and line not in own:
        block.append(comments[line])
    return " ".join(part for part in block if part)


def _env_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    prefix = str(cls.model_config.get("env_prefix", ""))
    env = prefix + name
    return [env if cls.model_config.get("case_sensitive") else env.upper()]


def _type(node: ast.AnnAssign, field: FieldInfo) -> str:
    text = f"`{ast.unparse(node.annotation)}`"
    bounds = [
        f"{symbol} {getattr(meta, attr)}"
        for meta in field.metadata
        for attr, symbol in _CONSTRAINTS
        if getattr(meta, attr, None) is not None
    ]
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _default_expression(node: ast.AnnAssign) -> ast.expr | None:
    value = node.value
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Field":
        for keyword in value.keywords:
            if keyword.arg == "default":
                return keyword.value
        return value.args[0] if value.args else None
    return value


def _default(node: ast.AnnAssign, field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = f"`{str(value).lower()}`"
    elif isinstance(value, str | Path):
        text = f"`{value}`" if str(value) else '`""`'
    else:
        text = f"`{value}`"
    expression = _default_expression(node)
    if isinstance(expression, ast.BinOp):
        text += f" (`{ast.unparse(expression)}`)"
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _plain(docstring: str) -> str:
    """A docstring as Markdown: reStructuredText literals become code spans."""
    return re.sub(r"``(.+?)``", r"`\1`", inspect.cleandoc(docstring))


def _accessors(cls: type[BaseSettings]) -> list[str]:
    """Functions of ``shared.config`` annotated to return ``cls``."""
    names = []
    for name, obj in vars(config).items():
        function = getattr(obj, "__wrapped__", obj)
        if (
            inspect.isfunction(function)
            and function.__module__ == config.__name__
            and function.__annotations__.get("return") in (cls.__name__, cls)
        ):
            names.append(name)
    return names


def render_class(cls: type[BaseSettings]) -> str:
    source, nodes = _field_nodes(cls)
    out = [f"## {cls.__name__}", ""]
    if cls.__doc__ and cls.__doc__ is not BaseSettings.__doc__:
        out += [_plain(cls.__doc__), ""]
    accessors = _accessors(cls)
    if accessors:
        calls = ", ".join(f"`shared.config.{name}()`" for name in accessors)
        out += [f"Built by {calls}.", ""]
    parents = [base.__name__ for base in cls.__bases__ if base in settings_classes()]
    if parents:
        links = ", ".join(f"[{name}](#{name.lower()})" for name in parents)
        out += [f"Also reads every variable of {links}.", ""]
    out += ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for node in nodes:
        assert isinstance(node.target, ast.Name)
        name = node.target.id
        field = cls.model_fields.get(name)
        if field is None:
            continue
        envs = ", ".join(f"`{env}`" for env in _env_names(cls, name, field))
        description = field.description or _comment_above(source, node.lineno)
        row = [envs, _type(node, field), _default(node, field), description]
        out.append("| " + " | ".join(_cell(part) for part in row) + " |")
    return "\n".join(out) + "\n"


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    parts = [
        "# Configuration\n",
        f"Generated from the settings classes in `shared/config.py` by `{COMMAND}`;"
        " edit the classes, not this file.\n",
    ]
    if config.__doc__:
        parts.append(_plain(config.__doc__) + "\n")
    parts += [render_class(cls) for cls in settings_classes()]
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
