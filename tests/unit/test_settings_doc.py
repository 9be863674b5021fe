"""docs/configuration.md is the reference generated from the settings classes, and is current."""

from __future__ import annotations

import inspect
from pathlib import Path

from shared.settings_doc import COMMAND, _comment_above, render, settings_classes

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert DOC.is_file(), f"docs/configuration.md is missing: run `{COMMAND}`"
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"docs/configuration.md differs from the settings classes: run `{COMMAND}`"
    )


def test_every_field_has_a_row() -> None:
    text = render()
    for cls in settings_classes():
        section = text.split(f"## {cls.__name__}\n", 1)[1].split("\n## ", 1)[0]
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name in inspect.get_annotations(cls):
            if name in cls.model_fields:
                assert f"`{(prefix + name).upper()}`" in section, (cls.__name__, name)


def test_description_falls_back_to_the_comment_block_above() -> None:
    source = (
        "class S:\n"
        "    a: int = 1\n"
        "\n"
        "    # First line of why,\n"
        "    # second line.\n"
        "    b: int = 2  # trailing note\n"
        "    c: int = 3\n"
    )
    assert _comment_above(source, 2) == ""
    assert _comment_above(source, 6) == "First line of why, second line. trailing note"
    assert _comment_above(source, 7) == ""
