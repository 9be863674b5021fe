"""Settings: one validated class per deployable, all built on a common base.

Every field is read from an ``ATELIER_``-prefixed environment variable (``ATELIER_DATABASE_URL``
...). ``DATABASE_URL`` and ``REDIS_URL`` are also accepted unprefixed because that is what
hosting platforms inject.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ATELIER_", env_nested_delimiter="__", extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = Field(
        default="sqlite:///./var/atelier.db",
        validation_alias=AliasChoices("ATELIER_DATABASE_URL", "DATABASE_URL"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("ATELIER_REDIS_URL", "REDIS_URL"),
    )
    storage_url: str = "file://./var/blobs"
    models_dir: Path = Path("var/models")
    models_url: str | None = Field(
        default=None,
        description="Where published model versions are fetched from (`s3://bucket/prefix`): "
        "each version is downloaded once into models_dir, checked against the sha256s of its "
        "manifest (docs/storage.md). Unset: models are read from models_dir only.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 API endpoint of a compatible service (MinIO, Ceph, R2, ...) for `s3://` "
        "URLs; unset: AWS itself, or `AWS_ENDPOINT_URL`.",
    )
    s3_region: str | None = Field(
        default=None, description="Region of the bucket; unset: `AWS_REGION`/`AWS_DEFAULT_REGION`."
    )
    s3_access_key_id: str | None = Field(
        default=None,
        description="S3 access key; unset: boto3's own chain (`AWS_ACCESS_KEY_ID`, a profile, "
        "an instance or pod role).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="Secret of `s3_access_key_id` (set both or neither)."
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="`path` puts the bucket in the URL path, as most self-hosted services want; "
        "`virtual` in the host name.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: lines for a person at a console (`atelier run`); `json`: one JSON "
        "object a line with the request id, for a log pipeline (the Docker and Kubernetes "
        "set-ups). Fields: docs/observability.md.",
    )
    # Image renditions, made once from the upload by the gateway (the worker makes them only
    # for images that arrive without them). The working copy is what the image tagger reads:
    # the decoded upload's centre square, its side scaled to working_copy_size (the tagger's
    # resize step), uncompressed, deleted once tagged. The thumbnail fits thumbnail_size; JPEG
    # encodes much faster than WebP for somewhat more bytes (see docs/perf.md).
    working_copy_size: int = 256
    thumbnail_size: int = 256
    thumbnail_format: Literal["jpeg", "webp"] = "jpeg"
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Let webhooks target loopback, private, link-local and other non-public "
        "addresses (checked at registration by the gateway and after DNS resolution at each "
        "delivery by the workers). Only for tests and closed networks: otherwise a tenant could "
        "make the workers call internal services (SSRF).",
    )

    @model_validator(mode="after")
    def _production_needs_real_services(self) -> CommonSettings:
        if self.environment == "production" and self.database_url.startswith("sqlite"):
            raise ValueError(
                "ATELIER_DATABASE_URL must point at PostgreSQL when ATELIER_ENVIRONMENT=production"
            )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "set ATELIER_S3_ACCESS_KEY_ID and ATELIER_S3_SECRET_ACCESS_KEY together"
            )
        return self

    @property
    def sqlalchemy_url(self) -> str:
        # Plain postgresql:// URLs would pick psycopg2, which we do not install.
        url = self.database_url
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return url


# The development default of internal_secret: both services know it without configuration, so
# `atelier run` works as is; production refuses it.
DEV_INTERNAL_SECRET = "atelier-development-internal-secret"


class ServiceSettings(CommonSettings):
    """What both HTTP services (gateway and recommender) share: input limits, internal calls."""

    max_json_bytes: int = Field(
        default=32 * 2**20,
        gt=0,
        description="Largest JSON request body in bytes, refused with 413 while it streams in.",
    )
    max_json_depth: int = Field(
        default=32,
        ge=2,
        description="Deepest nesting of objects and arrays in a JSON body (or a JSON form field), "
        "refused with 422 before parsing.",
    )
    internal_secret: SecretStr = Field(
        default=SecretStr(DEV_INTERNAL_SECRET),
        description="HMAC-SHA256 key the gateway signs its calls to the recommender's internal "
        "API with, and the recommender verifies; the same value on both. Production refuses "
        "the development default and values under 32 characters.",
    )
    internal_auth_window_s: float = Field(
        default=60.0,
        gt=0,
        description="How far a signed internal call's timestamp may be from the recommender's "
        "clock, either way, in seconds (replay window).",
    )

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> ServiceSettings:
        secret = self.internal_secret.get_secret_value()
        if self.environment == "production" and (secret == DEV_INTERNAL_SECRET or len(secret) < 32):
            raise ValueError(
                "set ATELIER_INTERNAL_SECRET to a random value of at least 32 characters (the "
                "same for gateway and recommender) when ATELIER_ENVIRONMENT=production"
            )
        return self


class GatewaySettings(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    max_text_chars: int = 200_000
    max_metadata_bytes: int = 64 * 1024
    max_batch_items: int = 100
    # Uploads decoded at once by one gateway process (0: one per core).
    decode_threads: int = 0
    max_interaction_events: int = 10_000
    # Seconds a verified API key is trusted without a database lookup (revocation delay).
    api_key_cache_s: float = 5.0
    # Memory for tenants' vectors kept by /v1/content/{id}/similar, per gateway process
    # (services/gateway/similar.py; 0 reads them from the database on every request).
    similar_cache_mb: int = Field(default=256, ge=0)
    recommender_url: str = "http://127.0.0.1:8001"
    recommender_timeout_s: float = 5.0
    broker_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Seconds the gateway waits on Redis for one command when it publishes a job "
        "or checks readiness. A stalled Redis (paused, or cut off by a partition) would "
        "otherwise hold an upload forever; past this the job stays queued for the sweeper and "
        "the upload still answers 202.",
    )
    readyz_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds /readyz waits for its checks; a check still running then is "
        "reported as timed out and the answer is 503.",
    )
    rate_limit_key_rps: float = Field(
        default=100.0,
        ge=0,
        description="Requests per second one API key may make on average (a token bucket in "
        "Redis shared by every gateway process); more answer 429 with Retry-After. 0: no limit.",
    )
    rate_limit_key_burst: int = Field(
        default=200, ge=1, description="Requests an idle API key may make at once."
    )
    rate_limit_tenant_rps: float = Field(
        default=0.0,
        ge=0,
        description="Requests per second all API keys of one tenant may make together, for "
        "deployments that share one gateway among tenants. 0: no limit.",
    )
    rate_limit_tenant_burst: int = Field(
        default=400, ge=1, description="Requests an idle tenant may make at once."
    )


class RecommenderSettings(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = 8001
    model_check_interval_s: float = 5.0
    # Its API takes no request bodies today; a small bound keeps it that way for hostile ones.
    max_json_bytes: int = Field(default=2**20, gt=0)


class WorkerSettings(CommonSettings):
    ort_threads: int = 1
    # Model runs at once on this host, across every worker process (0: cores // ort_threads).
    # Run more worker processes than slots, and one's database and file work overlaps another's
    # inference while the CPU never holds more model runs than cores (shared/inference/slots.py).
    inference_slots: int = Field(default=0, ge=0)
    # Shared by every worker process of the host; default: a per-user directory under /tmp.
    inference_slots_dir: Path | None = None
    # Registry names of the serving models; `text_embedder_int8` is faster and close to fp32 (see
    # docs/perf.md). The int8 CNN is not offered: its top-1 agreement is too low.
    image_model: str = "image_tagger"
    text_model: str = "text_embedder"
    # Hamming distance on the 64-bit pHash at or under which two images are near-duplicates:
    # 0-6 catches re-encodes, resizes and light crops without merging different shots.
    phash_max_distance: int = 6
    task_soft_time_limit_s: int = 300
    task_time_limit_s: int = 360
    training_time_limit_s: int = 3600
    # Threads a training job (text and image generators) gives torch; 0: every core of the host.
    # A training worker runs one job at a time, so it may use them all.
    training_threads: int = Field(default=0, ge=0)
    sweep_interval_s: float = 30.0
    lost_worker_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds past a queue's hard time limit after which the sweeper takes a "
        "running job that has reported nothing as lost with its worker (killed, out of memory, "
        "its host gone) and queues it again.",
    )
    # A job still queued this long after it was published is published again by the sweeper.
    requeue_after_s: float = 900.0
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port the worker's main process serves Prometheus `/metrics` on, for every "
        "process of its pool together (docs/observability.md). 0: no metrics server.",
    )


@lru_cache
def gateway_settings() -> GatewaySettings:
    return GatewaySettings()


@lru_cache
def recommender_settings() -> RecommenderSettings:
    return RecommenderSettings()


@lru_cache
def worker_settings() -> WorkerSettings:
    return WorkerSettings()
