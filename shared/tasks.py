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

SWEEP_TASK = "atelier.sweep_jobs"


@dataclass(frozen=True)
class JobType:
    name: str
    task: str
    queue: str
    # Jobs whose worker died are re-run this many times before they fail for good.
    max_attempts: int = 3


JOB_TYPES: dict[str, JobType] = {
    t.name: t
    for t in (
        JobType("tag_content", "atelier.tag_content", QUEUE_TAGGING),
        JobType("tag_batch", "atelier.tag_batch", QUEUE_TAGGING),
        JobType("train_tagger", "atelier.train_tagger", QUEUE_TRAINING),
        JobType("train_recommender", "atelier.train_recommender", QUEUE_TRAINING),
        JobType("train_text_generator", "atelier.train_text_generator", QUEUE_TRAINING),
        JobType("train_image_generator", "atelier.train_image_generator", QUEUE_TRAINING),
        # A system job (no tenant): the suite builds a bundled generator (shared/bundled.py).
        JobType("build_bundled_model", "atelier.build_bundled_model", QUEUE_TRAINING),
        JobType("generate_text", "atelier.generate_text", QUEUE_GENERATION),
        JobType("generate_images", "atelier.generate_images", QUEUE_GENERATION),
    )
}
