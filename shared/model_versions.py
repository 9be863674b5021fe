"""Model versions on disk: which versions exist, which one is active, and how they are named.

Pure Python (no onnxruntime): the gateway reads and switches versions without serving models.
The active version of model ``name`` is the content of ``<models_dir>/<name>/ACTIVE`` (written
atomically), or the newest published version when that file is absent. The loaded-model cache
that serving processes use lives in ``shared.inference.registry``, which re-exports these names.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.inference.manifest import (
    MANIFEST_NAME,
    Manifest,
    list_versions,
    read_manifest,
    verify_files,
)

__all__ = [
    "ACTIVE_FILE",
    "MANIFEST_NAME",
    "TAGGER_MODEL_PREFIX",
    "Manifest",
    "ModelError",
    "UnknownTag",
    "active_version",
    "check_tag",
    "list_versions",
    "next_version",
    "older_versions",
    "read_manifest",
    "recommender_model_name",
    "resolve_model",
    "serving_version",
    "set_active_version",
    "tagger_model_name",
    "tenant_model_name",
    "version_problem",
]

ACTIVE_FILE = "ACTIVE"


class ModelError(RuntimeError):
    """A model cannot be used: missing, corrupt, or the wrong kind. The message says which."""


class UnknownTag(ValueError):
    """A generation request names a tag its model was not trained on."""

    def __init__(self, tag: str, model: str, tags: list[str]) -> None:
        known = ", ".join(tags) if tags else "none: it was trained without tags"
        super().__init__(f"unknown tag {tag!r} for {model}; its tags: {known}")
        self.tags = tags


def check_tag(models_dir: Path, name: str, version: str, tag: str | None) -> None:
    """``UnknownTag`` unless ``tag`` is None or one of the tags in the model's manifest
    (``preprocessing.tags``, which a generator trained with tags lists); ``ModelError`` when
    the manifest cannot be read."""
    if tag is None:
        return
    try:
        manifest = read_manifest(models_dir / name / version)
    except (OSError, ValueError) as exc:  # removed or half-written since it was resolved
        raise ModelError(f"{name}:{version} has no readable manifest: {exc}") from exc
    if tag not in manifest.tags:
        raise UnknownTag(tag, f"{name}:{version}", manifest.tags)


def active_version(models_dir: Path, name: str) -> str | None:
    pointer = models_dir / name / ACTIVE_FILE
    try:
        version = pointer.read_text().strip()
    except FileNotFoundError:
        version = ""
    if version and (models_dir / name / version / MANIFEST_NAME).is_file():
        return version
    versions = list_versions(models_dir, name)
    return versions[-1].version if versions else None


def older_versions(models_dir: Path, name: str, version: str) -> list[str]:
    """Published versions older than ``version``, newest first: where a serving process falls
    back when ``version`` cannot be loaded (the registry, and /readyz saying what serves)."""
    return [m.version for m in reversed(list_versions(models_dir, name)) if m.version < version]


# (dir, (file, inode, size, mtime) ...) -> what was wrong: a probe hashes only a changed model.
_checked: dict[tuple[object, ...], str | None] = {}


def version_problem(models_dir: Path, name: str, version: str) -> str | None:
    """Why this version cannot be served (no manifest, a missing or corrupt file), or None."""
    model_dir = models_dir / name / version
    try:
        manifest = read_manifest(model_dir)
        stamp: tuple[object, ...] = (str(model_dir),)
        for fname in sorted(manifest.files):
            st = (model_dir / fname).stat()
            stamp += (fname, st.st_ino, st.st_size, st.st_mtime_ns)
    except (OSError, ValueError) as exc:
        return f"{name}/{version}: {exc}"
    if stamp not in _checked:
        if len(_checked) > 256:
            _checked.clear()
        try:
            verify_files(model_dir, manifest)
            _checked[stamp] = None
        except (OSError, ValueError) as exc:
            _checked[stamp] = str(exc)
    return _checked[stamp]


def serving_version(models_dir: Path, name: str) -> tuple[str | None, list[str]]:
    """The version a serving process ends up with: the active one if its files are whole, else
    the newest older one that is (``older_versions``); and what is wrong with those skipped."""
    active = active_version(models_dir, name)
    if active is None:
        return None, []
    problems: list[str] = []
    for version in (active, *older_versions(models_dir, name, active)):
        problem = version_problem(models_dir, name, version)
        if problem is None:
            return version, problems
        problems.append(problem)
    return None, problems


def set_active_version(models_dir: Path, name: str, version: str) -> None:
    if not (models_dir / name / version / MANIFEST_NAME).is_file():
        raise ModelError(f"model {name} has no version {version}")
    pointer = models_dir / name / ACTIVE_FILE
    tmp = pointer.with_name(f".{ACTIVE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(version)
    os.replace(tmp, pointer)


TAGGER_MODEL_PREFIX = "tagger_"


def tagger_model_name(tagger_id: str) -> str:
    """Registry name of a tenant tagger's versions."""
    return f"{TAGGER_MODEL_PREFIX}{tagger_id}"


def recommender_model_name(tenant_id: str) -> str:
    """Name of a tenant's recommender in ``model_versions`` (its files are not in the registry)."""
    return f"recommender:{tenant_id}"


def tenant_model_name(base: str, tenant_id: str) -> str:
    """Registry name of a tenant's own trained copy of ``base`` (e.g. its text generator)."""
    return f"{base}__{tenant_id}"


def resolve_model(
    models_dir: Path, base: str, tenant_id: str, version: str | None = None
) -> tuple[str, str]:
    """``(name, version)`` to serve: the tenant's own model if it has one, else the bundled one.

    An explicit ``version`` is looked up in the tenant's versions first, then the bundled ones.
    """
    own = tenant_model_name(base, tenant_id)
    for name in (own, base):
        if version is not None:
            if (models_dir / name / version / MANIFEST_NAME).is_file():
                return name, version
            continue
        active = active_version(models_dir, name)
        if active is not None:
            return name, active
    if version is not None:
        raise ModelError(f"{base} has no version {version!r} for this tenant")
    raise ModelError(f"model {base!r} is not built (run `make models`)")


def next_version(models_dir: Path, name: str) -> str:
    """Zero-padded increasing versions, so that string order is age order."""
    existing = [int(m.version) for m in list_versions(models_dir, name) if m.version.isdigit()]
    return f"{(max(existing) + 1) if existing else 1:04d}"
