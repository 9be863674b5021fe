"""Train a tenant tagger: logistic regression on stored embeddings -> ONNX -> a new model version.

Examples come from three places: explicit ``POST /v1/taggers/{id}/examples`` rows, tags a person
added or accepted (positives) and tags a person rejected (negatives), for the tagger's labels
only. An item positive for no label of the tagger is a negative for all of them (one-vs-rest).
The classifier of a ``multi`` tagger is a one-vs-rest ``LogisticRegression`` with balanced
class weights, read at a 0.5 threshold; a ``single`` tagger is one multinomial (softmax)
``LogisticRegression`` over the items with exactly one label, and serves its best label with its
probability. One-vs-rest binary models each see one positive class against the rest, and their
independent probabilities often all fall under 0.5 on an item: on AG News that abstained on
some texts and lost accuracy to a plain softmax regression (see docs/perf.md). Its
cross-validated metrics (``cross_val_predict``) go into the job result and the model manifest.
The model is exported with skl2onnx, checked against scikit-learn, published atomically as
``tagger_<id>/<n>`` and made active, which every worker picks up within seconds.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from celery import Celery
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from shared.db.model_versions import record_version
from shared.db.models import (
    Embedding,
    Job,
    JobStatus,
    ModelVersion,
    Tag,
    Tagger,
    TaggerExample,
    TagOrigin,
)
from shared.db.taggers import labelled_items, short_labels, training_model
from shared.inference.manifest import Manifest, list_versions, publish_model_dir, write_manifest
from shared.jobs import new_job, publish, report_progress
from shared.model_versions import set_active_version, tagger_model_name
from shared.schemas.tagging import MIN_EXAMPLES_PER_LABEL
from shared.tasks import RETRAIN_TAGGERS_TASK, TRAIN_TAGGER
from workers.celery_app import app
from workers.context import WorkerContext, get_context
from workers.jobs import JobCancelled, JobFailed, run_task
from workers.tagging.tenant_taggers import KIND, MODEL_FILE, OUTPUT, label_probabilities

log = logging.getLogger(__name__)

MAX_FOLDS = 5
THRESHOLD = 0.5
# float32 ONNX vs float64 scikit-learn: anything above this is a conversion bug, not rounding.
ONNX_TOLERANCE = 1e-4
_IN_CHUNK = 500  # ids per IN (...) clause; SQLite allows at most 999 parameters in older builds


@dataclass
class TrainingSet:
    labels: list[str]
    content_ids: list[str]
    x: np.ndarray  # (n, dim) float32
    y: np.ndarray  # (n, n_labels) 0/1
    embedding_model: str
    without_embedding: int = 0
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)


def gather_examples(session: Session, tagger: Tagger) -> TrainingSet:
    """Every labelled item of the tagger with its stored embedding of the tagger's space."""
    labels = list(tagger.labels)
    positive, negative = labelled_items(session, tagger)
    ids = sorted(set(positive) | set(negative))

    vectors: dict[str, tuple[str, bytes]] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for cid, model, vec in session.execute(
            select(Embedding.content_id, Embedding.model, Embedding.vector).where(
                Embedding.content_id.in_(chunk), Embedding.space == tagger.kind
            )
        ):
            vectors[cid] = (model, vec)
    model = training_model(m for m, _ in vectors.values())
    kept = [cid for cid in ids if cid in vectors and vectors[cid][0] == model]
    dim = len(vectors[kept[0]][1]) // 4 if kept else 0
    x = np.zeros((len(kept), dim), dtype=np.float32)
    y = np.zeros((len(kept), len(labels)), dtype=np.int64)
    col = {label: j for j, label in enumerate(labels)}
    for i, cid in enumerate(kept):
        x[i] = np.frombuffer(vectors[cid][1], dtype="<f4")
        for label in positive.get(cid, ()):
            y[i, col[label]] = 1
    per_label = {
        label: {"positives": int(y[:, j].sum()), "negatives": int(len(kept) - y[:, j].sum())}
        for j, label in enumerate(labels)
    }
    return TrainingSet(
        labels=labels,
        content_ids=kept,
        x=x,
        y=y,
        embedding_model=model,
        without_embedding=len(ids) - len(kept),
        per_label=per_label,
    )


def check_enough(ts: TrainingSet, tagger_id: str) -> None:
    short = [
        f"{label!r} has {c['positives']} positive and {c['negatives']} negative"
        for label, c in short_labels(ts.per_label).items()
    ]
    if short:
        skipped = (
            f" ({ts.without_embedding} labelled items have no {ts.embedding_model or 'stored'} "
            "embedding yet and were left out)"
            if ts.without_embedding
            else ""
        )
        raise JobFailed(
            f"too few examples to train tagger {tagger_id}: every label needs at least "
            f"{MIN_EXAMPLES_PER_LABEL} positive and {MIN_EXAMPLES_PER_LABEL} negative items, but "
            + "; ".join(short)
            + skipped
            + ". Add examples (POST /v1/taggers/{id}/examples) or accept/add tags."
        )


def _target(y: np.ndarray) -> np.ndarray:
    # One label: scikit-learn wants a 1-d binary target, not a one-column indicator matrix.
    return y[:, 0] if y.shape[1] == 1 else y


def _estimator(mode: str = "multi") -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    if mode == "single":
        # C=1 (the default) was the best of 1-100 at every size on AG News; more C overfits.
        return LogisticRegression(class_weight="balanced", max_iter=2000)
    return OneVsRestClassifier(LogisticRegression(class_weight="balanced", max_iter=2000))


def single_label_rows(ts: TrainingSet) -> TrainingSet:
    """The items with exactly one positive label: what a softmax classifier can learn from.

    An item positive for none (only rejections) or for several says nothing about which one
    label it is; they are left out.
    """
    keep = ts.y.sum(axis=1) == 1
    y = ts.y[keep]
    return TrainingSet(
        labels=ts.labels,
        content_ids=[c for c, k in zip(ts.content_ids, keep, strict=True) if k],
        x=ts.x[keep],
        y=y,
        embedding_model=ts.embedding_model,
        without_embedding=ts.without_embedding,
        per_label={
            label: {"positives": int(y[:, j].sum()), "negatives": int(len(y) - y[:, j].sum())}
            for j, label in enumerate(ts.labels)
        },
    )


def fit_and_evaluate(
    ts: TrainingSet, *, seed: int = 0, mode: str = "multi"
) -> tuple[Any, dict[str, Any]]:
    """Cross-validated metrics, then the model fitted on everything (``ts`` of a single
    tagger: :func:`single_label_rows`)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    n_labels = len(ts.labels)
    smallest = min(min(c["positives"], c["negatives"]) for c in ts.per_label.values())
    folds = max(2, min(MAX_FOLDS, smallest))
    # Stratify on each item's first label (or "none") so every fold sees every label.
    strata = np.where(ts.y.any(axis=1), ts.y.argmax(axis=1), n_labels)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    single = mode == "single"
    target = ts.y.argmax(axis=1) if single else _target(ts.y)
    # Two BLAS threads on a shared 2-core machine made a fit far slower (see docs/perf.md).
    with threadpool_limits(1), warnings.catch_warnings():
        # A fold may lack a label entirely; scikit-learn then predicts a constant and says so.
        warnings.simplefilter("ignore")
        proba = cross_val_predict(
            _estimator(mode), ts.x, target, cv=cv.split(ts.x, strata), method="predict_proba"
        )
        model = _estimator(mode).fit(ts.x, target)
    proba = label_probabilities(np.asarray(proba), n_labels)
    if single:
        # Its answer: the best label, whatever its probability.
        pred = np.eye(n_labels, dtype=np.int64)[proba.argmax(axis=1)]
    else:
        pred = (proba >= THRESHOLD).astype(np.int64)
    precision, recall, f1, _ = precision_recall_fscore_support(
        ts.y, pred, average=None, zero_division=0, labels=list(range(n_labels))
    )
    has_label = ts.y.any(axis=1)
    top1 = (
        float(ts.y[has_label, proba[has_label].argmax(axis=1)].mean()) if has_label.any() else None
    )
    metrics = {
        "examples": len(ts.content_ids),
        "folds": folds,
        "mode": mode,
        "threshold": None if single else THRESHOLD,
        "abstained": round(float((pred.sum(axis=1) == 0).mean()), 4) if len(pred) else 0.0,
        # Every label of an item right (exact set match) at the threshold.
        "accuracy": round(float(accuracy_score(ts.y, pred)), 4),
        "macro_f1": round(float(f1_score(ts.y, pred, average="macro", zero_division=0)), 4),
        "top1_accuracy": None if top1 is None else round(top1, 4),
        "per_label": {
            label: {
                **ts.per_label[label],
                "precision": round(float(precision[j]), 4),
                "recall": round(float(recall[j]), 4),
                "f1": round(float(f1[j]), 4),
            }
            for j, label in enumerate(ts.labels)
        },
    }
    return model, metrics


def export_onnx(model: Any, ts: TrainingSet) -> bytes:
    """skl2onnx with a plain probability tensor (no ZipMap), checked against scikit-learn."""
    import onnxruntime as ort
    from skl2onnx import to_onnx

    onx = to_onnx(
        model,
        ts.x[:1],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    data: bytes = onx.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = label_probabilities(
        sess.run([OUTPUT], {sess.get_inputs()[0].name: ts.x})[0], len(ts.labels)
    )
    want = label_probabilities(model.predict_proba(ts.x), len(ts.labels))
    diff = float(np.abs(got - want).max())
    if diff >= ONNX_TOLERANCE:
        raise JobFailed(f"the exported ONNX model disagrees with scikit-learn by {diff:.2e}")
    return data


def next_version(session: Session, models_dir: Path, name: str) -> int:
    seen = [
        int(v)
        for v in session.scalars(select(ModelVersion.version).where(ModelVersion.name == name))
        if v.isdigit()
    ]
    seen += [int(m.version) for m in list_versions(models_dir, name) if m.version.isdigit()]
    return max(seen, default=0) + 1


def train_tagger(
    ctx: WorkerContext, session: Session, tagger: Tagger, *, job_id: str | None = None
) -> dict[str, Any]:
    """Train, publish and activate a new version of ``tagger``; returns what the job reports."""
    started = datetime.now(UTC)
    ts = gather_examples(session, tagger)
    mode = tagger.mode or "multi"
    if mode == "single":
        ts = single_label_rows(ts)
    check_enough(ts, tagger.id)
    if job_id and report_progress(session, job_id, 0.2):
        raise JobCancelled("cancelled before fitting")
    model, metrics = fit_and_evaluate(ts, mode=mode)
    if job_id and report_progress(session, job_id, 0.7, metrics=metrics):
        raise JobCancelled("cancelled before publishing")
    data = export_onnx(model, ts)

    name = tagger_model_name(tagger.id)
    models_dir = ctx.settings.models_dir
    version = str(next_version(session, models_dir, name))
    with publish_model_dir(models_dir, name, version) as tmp:
        (tmp / MODEL_FILE).write_bytes(data)
        write_manifest(
            tmp,
            Manifest(
                name=name,
                version=version,
                kind=KIND,
                inputs=["X"],
                outputs=[OUTPUT],
                metrics=metrics,
                extra={
                    "labels": ts.labels,
                    "space": tagger.kind,
                    "dim": int(ts.x.shape[1]),
                    "mode": mode,
                    "threshold": THRESHOLD,
                    "embedding_model": ts.embedding_model,
                    "tagger_id": tagger.id,
                    "tenant_id": tagger.tenant_id,
                },
                license="trained on the tenant's own examples",
                attribution="scikit-learn LogisticRegression, exported with skl2onnx",
            ),
        )
    record_version(
        session,
        tenant_id=tagger.tenant_id,
        name=name,
        version=version,
        kind=KIND,
        metrics=metrics,
        job_id=job_id,
    )
    tagger.trained_at = started
    session.commit()
    # The pointer moves after the rows commit, so a failed commit never leaves a version
    # serving that the API does not list.
    set_active_version(models_dir, name, version)
    return {
        "tagger_id": tagger.id,
        "model": name,
        "version": version,
        "metrics": metrics,
        "skipped_without_embedding": ts.without_embedding,
    }


def train_tagger_job(ctx: WorkerContext, session: Session, job: Job) -> dict[str, Any]:
    tagger_id = str(job.params.get("tagger_id", ""))
    tagger = session.get(Tagger, tagger_id)
    if tagger is None or tagger.tenant_id != job.tenant_id:
        raise JobFailed(f"tagger {tagger_id} was deleted before it could be trained")
    return train_tagger(ctx, session, tagger, job_id=job.id)


def due_for_retraining(session: Session) -> list[Tagger]:
    """Trained taggers with examples or human tag changes newer than their last training."""
    # Job params are JSON and not portably queryable, so any pending training of the tenant
    # postpones its scheduled ones to the next beat; that only delays, never loses, a retrain.
    pending = exists().where(
        Job.tenant_id == Tagger.tenant_id,
        Job.type == TRAIN_TAGGER.name,
        Job.status.in_((JobStatus.queued, JobStatus.running)),
    )
    candidates = session.scalars(
        select(Tagger).where(Tagger.trained_at.is_not(None), ~pending)
    ).all()
    due = []
    for tagger in candidates:
        new_example = exists().where(
            TaggerExample.tagger_id == tagger.id, TaggerExample.created_at > tagger.trained_at
        )
        corrected = exists().where(
            Tag.tenant_id == tagger.tenant_id,
            Tag.name.in_(list(tagger.labels)),
            Tag.origin != TagOrigin.auto,
            Tag.updated_at > tagger.trained_at,
        )
        if session.scalar(select(new_example | corrected)):
            due.append(tagger)
    return due


def enqueue_retraining(session: Session, celery: Celery) -> list[str]:
    jobs = []
    for tagger in due_for_retraining(session):
        jobs.append(
            new_job(
                session,
                tenant_id=tagger.tenant_id,
                job_type=TRAIN_TAGGER.name,
                params={"tagger_id": tagger.id, "trigger": "schedule"},
            )
        )
    session.commit()
    for job in jobs:
        publish(session, celery, job)
    return [j.id for j in jobs]


@app.task(name=TRAIN_TAGGER.task, bind=True)
def train_tagger_task(self: Any, job_id: str) -> str | None:
    return run_task(self, job_id, train_tagger_job)


@app.task(name=RETRAIN_TAGGERS_TASK, ignore_result=True)
def retrain_taggers() -> list[str]:
    """Beat: one training job per tagger whose examples changed since its last version."""
    with get_context().session() as session:
        return enqueue_retraining(session, app)
