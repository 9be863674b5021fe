"""Model versions on disk: which versions exist, which one is active, and how they are named.

Pure Python (no onnxruntime): the gateway reads and switches versions without serving models.
The active version of model ``name`` is the content of ``<models_dir>/<name>/ACTIVE`` (written
atomically), or the newest published version when that file is absent. The loaded-model cache
that serving processes use lives in ``shared.inference.registry``, which re-exports these names.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.inference.manifest import MANIFEST_NAME, Manifest, list_versions, read_manifest

__all__ = [
    "ACTIVE_FILE",
    "MANIFEST_NAME",
    "TAGGER_MODEL_PREFIX",
    "Manifest",
    "ModelError",
    "active_version",
    "list_versions",
    "next_version",
    "read_manifest",
    "recommender_model_name",
    "resolve_model",
    "set_active_version",
    "tagger_model_name",
    "tenant_model_name",
]

ACTIVE_FILE = "ACTIVE"


class ModelError(RuntimeError):
    """A model cannot be used: missing, corrupt, or the wrong kind. The message says which."""


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
