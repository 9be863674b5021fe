from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.schemas.text import RequestModel


class TextGenerateRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(default="", max_length=2000)
    max_length: int = Field(default=200, ge=1, le=2000)
    temperature: float = Field(default=1.0, ge=0.0, le=5.0)
    top_k: int = Field(default=0, ge=0, le=256)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    n: int = Field(default=1, ge=1, le=16)
    stop: list[str] = Field(default_factory=list, max_length=8)
    model_version: str | None = Field(default=None, max_length=100)
    tag: str | None = Field(
        default=None,
        max_length=200,
        description="write like the corpus's texts with this tag (a generator trained on tagged "
        "content lists its tags in its model version's `tags`)",
    )

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value


# Latent entries beyond +-DEFAULT_TRUNCATION are drawn again (the truncation trick). 1.0 served
# clearly worse images than the untruncated model; 2.0 serves the same FID with higher
# precision (docs/image-generator.md, "Truncation", has the figures).
DEFAULT_TRUNCATION = 2.0


class ImagesGenerateRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=8, ge=1, le=64)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    truncation: float = Field(default=DEFAULT_TRUNCATION, gt=0.0, le=4.0)
    model_version: str | None = Field(default=None, max_length=100)
    tag: str | None = Field(
        default=None, max_length=200, description="only for a generator trained with tags"
    )


class InterpolateRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    seed_a: int = Field(ge=0, le=2**32 - 1)
    seed_b: int = Field(ge=0, le=2**32 - 1)
    steps: int = Field(default=8, ge=2, le=64)
    truncation: float = Field(default=DEFAULT_TRUNCATION, gt=0.0, le=4.0)
    model_version: str | None = Field(default=None, max_length=100)
    tag: str | None = Field(
        default=None, max_length=200, description="only for a generator trained with tags"
    )


class CorpusFilter(RequestModel):
    model_config = ConfigDict(extra="forbid")

    tag: str | None = Field(default=None, max_length=200)
    kind: str | None = Field(default=None, max_length=16)


class TextGeneratorTrain(RequestModel):
    model_config = ConfigDict(extra="forbid")

    filter: CorpusFilter = Field(default_factory=CorpusFilter)
    corpus: str | None = Field(
        default=None, max_length=5_000_000, description="extra plain-text corpus"
    )
    epochs: int | None = Field(
        default=None, ge=1, le=50, description="cap on passes over the corpus"
    )
    budget_s: float | None = Field(
        default=None,
        gt=0,
        le=24 * 3600,
        description="training time budget in seconds (600 when neither this nor `epochs` is "
        "given); with `epochs`, whichever ends first",
    )
    hidden: int = Field(default=256, ge=32, le=1024)
    layers: int = Field(default=2, ge=1, le=3)
    conditional: bool | None = Field(
        default=None,
        description="learn a control code per tag of the content (tags on at least 8 "
        "documents), so generation can take `tag`; false: never; default: when two qualify",
    )
    condition_tags: list[str] | None = Field(
        default=None,
        max_length=64,
        description="the tags that may get a control code (any origin); default: the tags a "
        "person set or accepted",
    )


class ImageGeneratorTrain(RequestModel):
    model_config = ConfigDict(extra="forbid")

    filter: CorpusFilter = Field(default_factory=CorpusFilter)
    steps: int | None = Field(
        default=None, ge=10, le=20_000, description="cap on updates (default: the budget alone)"
    )
    budget_s: float | None = Field(
        default=None,
        gt=0,
        le=24 * 3600,
        description="training time budget in seconds (600 when `steps` is not given either); "
        "with `steps`, whichever ends first",
    )
    conditional: bool | None = Field(
        default=None,
        description="train on the images' tags (tags on 16+ images each); default: when at "
        "least two tags qualify",
    )


class GenerationAccepted(BaseModel):
    job_id: str
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
