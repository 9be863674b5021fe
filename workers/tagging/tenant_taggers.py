"""Tenant taggers at serving time: a tenant's own classifiers over stored embeddings.

A tenant tagger is a scikit-learn logistic regression (``multi``: one-vs-rest, each label at
its threshold; ``single``: softmax, every item gets its best label with its probability)
exported to ONNX by ``workers.training.taggers``; its manifest names the labels, the embedding
space it reads (``image`` or ``text``), the vector size and the mode. Each is published as
``tagger_<id>/<version>``, so the registry's ACTIVE pointer (re-read every few seconds)
switches versions without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.db.models import ModelVersion, Tag, TagOrigin
from shared.inference.base import InferenceModel
from shared.inference.registry import ModelRegistry
from shared.model_versions import ModelError

log = logging.getLogger(__name__)

KIND = "tenant_tagger"
MODEL_FILE = "model.onnx"
OUTPUT = "probabilities"
DEFAULT_THRESHOLD = 0.5


def label_probabilities(probs: np.ndarray, n_labels: int) -> np.ndarray:
    """(n, n_labels) probabilities from a one-vs-rest output.

    With one label scikit-learn fits a plain binary model whose output has two columns
    (not-label, label); with several it is already one column per label.
    """
    if n_labels == 1 and probs.shape[1] == 2:
        return probs[:, 1:]
    return probs


class TenantTagger(InferenceModel):
    """``predict(embeddings) -> [[(label, probability), ...] per row]``, best first."""

    kind = KIND

    def _load(self) -> None:
        extra = self.manifest.extra
        try:
            self.labels: list[str] = [str(x) for x in extra["labels"]]
            self.space: str = str(extra["space"])
            self.dim = int(extra["dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{self.ref}: manifest lacks labels/space/dim ({exc})") from exc
        self.threshold = float(extra.get("threshold", DEFAULT_THRESHOLD))
        # Versions trained before facets existed are one-vs-rest: multi.
        self.mode = str(extra.get("mode", "multi"))
        self._session = self.session(MODEL_FILE)
        self._input = self._session.get_inputs()[0].name
        probe = self.probabilities(np.zeros((1, self.dim), dtype=np.float32))
        if probe.shape != (1, len(self.labels)):
            raise ModelError(
                f"{self.ref}: output shape {probe.shape}, expected (1, {len(self.labels)})"
            )

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        if x.shape[1] != self.dim:
            raise ModelError(f"{self.ref} reads {self.dim}-d vectors, got {x.shape[1]}-d ones")
        probs = self._session.run([OUTPUT], {self._input: x})[0]
        return label_probabilities(probs, len(self.labels))

    def predict(
        self, embeddings: np.ndarray, *, min_score: float | None = None
    ) -> list[list[tuple[str, float]]]:
        return self._predict(embeddings, min_score=min_score)

    def _predict(
        self, embeddings: np.ndarray, *, min_score: float | None = None
    ) -> list[list[tuple[str, float]]]:
        if len(embeddings) == 0:
            return []
        cut = self.threshold if min_score is None else min_score
        probs = self.probabilities(embeddings)
        if self.mode == "single" and min_score is None:
            best = probs.argmax(axis=1)
            return [[(self.labels[j], float(row[j]))] for row, j in zip(probs, best, strict=True)]
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            out.append([(self.labels[j], float(row[j])) for j in order if row[j] >= cut])
        return out


@dataclass
class TaggerOutput:
    name: str  # registry name, tagger_<id>
    source: str  # name:version, stored on every tag it gives
    space: str
    tags: list[list[tuple[str, float]]]  # one list per row of that space's embeddings


@dataclass
class TenantTagging:
    outputs: list[TaggerOutput] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def active_tagger_names(session: Session, tenant_id: str) -> list[str]:
    return list(
        session.scalars(
            select(ModelVersion.name)
            .where(
                ModelVersion.tenant_id == tenant_id,
                ModelVersion.kind == KIND,
                ModelVersion.active.is_(True),
            )
            .order_by(ModelVersion.name)
        ).all()
    )


def apply_tenant_taggers(
    registry: ModelRegistry,
    session: Session,
    tenant_id: str,
    embeddings: Mapping[str, np.ndarray],
) -> TenantTagging:
    """Run every active tagger of the tenant on the embeddings of its space, one batch each.

    ``embeddings`` maps a space (``image``/``text``) to an (n, dim) matrix. A tagger that cannot
    be loaded is reported in ``errors`` and skipped: the tenant's own model must not stop the
    bundled models' tags from being stored.
    """
    result = TenantTagging()
    for name in active_tagger_names(session, tenant_id):
        try:
            tagger = registry.get(name, TenantTagger)
            matrix = embeddings.get(tagger.space)
            if matrix is None or len(matrix) == 0:
                continue
            tags = tagger.predict(matrix)
        except ModelError as exc:
            log.warning("tenant tagger %s skipped: %s", name, exc)
            result.errors[name] = str(exc)
            continue
        result.outputs.append(
            TaggerOutput(name=name, source=tagger.ref, space=tagger.space, tags=tags)
        )
    return result


def drop_other_versions(session: Session, content_ids: list[str], output: TaggerOutput) -> None:
    """Remove automatic tags an earlier (or later, after a rollback) version of it gave."""
    if not content_ids:
        return
    session.execute(
        delete(Tag).where(
            Tag.content_id.in_(content_ids),
            Tag.source.like(f"{output.name}:%"),
            Tag.source != output.source,
            Tag.origin == TagOrigin.auto,
        )
    )
