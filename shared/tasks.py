"""Task names, queues and job types: what a producer needs to enqueue work.

The gateway imports this module (not ``workers``) so it never imports onnxruntime or torch.
Every task takes one argument, ``job_id``; the job row holds the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

QUEUE_TAGGING = "tagging"
QUEUE_GENERATION = "generation"
QUEUE_TRAINING = "training"
QUEUES = (QUEUE_TAGGING, QUEUE_GENERATION, QUEUE_TRAINING)
# The bundled generators' first-start builds under `atelier run` (minutes each): a queue of
# their own, with its own worker, so a tenant's training never waits behind them. Deployments
# build them before the workers start (docker-compose's models service), so it is no worker role.
QUEUE_BUILDS = "builds"
# Every queue a message can be sent to: what Celery declares, `atelier run` consumes and
# `atelier status` counts.
ALL_QUEUES = (*QUEUES, QUEUE_BUILDS)

SWEEP_TASK = "atelier.sweep_jobs"
# Periodic tasks that enqueue training jobs; shared/queue.py holds the whole beat schedule.
RETRAIN_TAGGERS_TASK = "atelier.retrain_taggers"
SCHEDULE_RECOMMENDERS_TASK = "atelier.schedule_recommender_training"
# Hourly is fresh enough: serving folds new events and examples in between.
RETRAIN_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class JobType:
    name: str
    task: str
    queue: str
    # Jobs whose worker died are re-run this many times before they fail for good.
    max_attempts: int = 3


# Producers and tasks name a job type through these (``TAG_CONTENT.name``, ``.task``), never
# by a bare string.
TAG_CONTENT = JobType("tag_content", "atelier.tag_content", QUEUE_TAGGING)
TAG_BATCH = JobType("tag_batch", "atelier.tag_batch", QUEUE_TAGGING)
TRAIN_TAGGER = JobType("train_tagger", "atelier.train_tagger", QUEUE_TRAINING)
TRAIN_RECOMMENDER = JobType("train_recommender", "atelier.train_recommender", QUEUE_TRAINING)
TRAIN_TEXT_GENERATOR = JobType(
    "train_text_generator", "atelier.train_text_generator", QUEUE_TRAINING
)
TRAIN_IMAGE_GENERATOR = JobType(
    "train_image_generator", "atelier.train_image_generator", QUEUE_TRAINING
)
# A system job (no tenant): the suite builds a bundled generator (shared/bundled.py).
BUILD_BUNDLED_MODEL = JobType("build_bundled_model", "atelier.build_bundled_model", QUEUE_BUILDS)
GENERATE_TEXT = JobType("generate_text", "atelier.generate_text", QUEUE_GENERATION)
GENERATE_IMAGES = JobType("generate_images", "atelier.generate_images", QUEUE_GENERATION)

JOB_TYPES: dict[str, JobType] = {
    t.name: t
    for t in (
        TAG_CONTENT,
        TAG_BATCH,
        TRAIN_TAGGER,
        TRAIN_RECOMMENDER,
        TRAIN_TEXT_GENERATOR,
        TRAIN_IMAGE_GENERATOR,
        BUILD_BUNDLED_MODEL,
        GENERATE_TEXT,
        GENERATE_IMAGES,
    )
}
