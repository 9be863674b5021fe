"""Request and response bodies of the tagging API: vocabulary, tag review, similar, taggers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.schemas.text import RequestModel

# Limits, documented in the API: a vocabulary is embedded per tagging job (cached per worker),
# so it stays small enough to embed in well under a second on one core.
MAX_VOCABULARY_ENTRIES = 500
MAX_DESCRIPTIONS = 10
MAX_DESCRIPTION_CHARS = 300
MAX_TAG_NAME_CHARS = 100
MAX_TAGGER_LABELS = 100
MAX_EXAMPLES_PER_REQUEST = 1000
# Cross-validation needs a few positives and negatives of every label in each training fold.
MIN_EXAMPLES_PER_LABEL = 3

TaggerKind = Literal["image", "text"]
# single: exactly one answer per item (a section, a category); multi: each independently.
FacetMode = Literal["single", "multi"]
MAX_FACETS = 50
Space = Literal["image", "text"]


def normalise_tag(name: str) -> str:
    """Tags are stored lower-case and trimmed, like automatic tags."""
    return " ".join(name.split()).lower()


def _nonblank_tag(name: str) -> str:
    name = normalise_tag(name)
    if not name:
        raise ValueError("name is blank")
    return name


class VocabularyEntryIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_TAG_NAME_CHARS)
    descriptions: list[str] = Field(
        default_factory=list,
        max_length=MAX_DESCRIPTIONS,
        description="one-sentence descriptions or other phrasings; they make zero-shot "
        "tagging markedly more accurate than the bare name",
    )
    facet: str | None = Field(
        default=None,
        max_length=MAX_TAG_NAME_CHARS,
        description="the facet it belongs to (one of the request's facets); none: an "
        "independent entry, tagged when its probability reaches its threshold",
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="its own cut on the calibrated probability (multi facets and entries "
        "without a facet); default 0.5",
    )

    @field_validator("facet")
    @classmethod
    def _facet(cls, v: str | None) -> str | None:
        return normalise_tag(v) or None if v is not None else None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _nonblank_tag(v)

    @field_validator("descriptions")
    @classmethod
    def _descriptions(cls, v: list[str]) -> list[str]:
        out = [" ".join(d.split()) for d in v]
        if any(not d for d in out):
            raise ValueError("descriptions must not be blank")
        if any(len(d) > MAX_DESCRIPTION_CHARS for d in out):
            raise ValueError(f"a description is longer than {MAX_DESCRIPTION_CHARS} characters")
        return out


class FacetIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_TAG_NAME_CHARS)
    mode: FacetMode = "multi"
    allow_none: bool = Field(
        default=False,
        description="single facets only: answer nothing when the best entry's probability "
        "is under none_below (otherwise a single facet always answers its best entry)",
    )
    none_below: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _nonblank_tag(v)


class VocabularyIn(RequestModel):
    """The object form of ``PUT /v1/vocabulary``: facets and the entries that use them."""

    model_config = ConfigDict(extra="forbid")

    facets: list[FacetIn] = Field(default_factory=list, max_length=MAX_FACETS)
    entries: list[VocabularyEntryIn] = Field(max_length=MAX_VOCABULARY_ENTRIES)


class FacetPublic(BaseModel):
    name: str
    mode: FacetMode
    allow_none: bool
    none_below: float | None


class VocabularyEntryPublic(BaseModel):
    name: str
    descriptions: list[str]
    facet: str | None = None
    threshold: float | None = None


class Vocabulary(BaseModel):
    facets: list[FacetPublic] = Field(default_factory=list)
    entries: list[VocabularyEntryPublic]


class SimilarItem(BaseModel):
    id: str
    external_id: str | None
    kind: str
    title: str | None
    score: float = Field(description="cosine similarity of the two embeddings, -1..1")


class SimilarPage(BaseModel):
    content_id: str
    space: Space
    model: str
    items: list[SimilarItem]


class TaggerCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    kind: TaggerKind
    labels: list[str] = Field(min_length=1, max_length=MAX_TAGGER_LABELS)
    mode: FacetMode = Field(
        default="multi",
        description="single: every item gets exactly its best label, with its probability "
        "(a softmax classifier); multi: each label independently at 0.5 (one-vs-rest)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("name is blank")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        out = [normalise_tag(lbl) for lbl in v]
        if any(not lbl or len(lbl) > MAX_TAG_NAME_CHARS for lbl in out):
            raise ValueError(f"labels must have 1 to {MAX_TAG_NAME_CHARS} characters")
        if len(set(out)) != len(out):
            raise ValueError("labels repeat (compared lower-case)")
        return out

    @model_validator(mode="after")
    def _single_needs_choices(self) -> TaggerCreate:
        if self.mode == "single" and len(self.labels) < 2:
            raise ValueError("a single-label tagger needs at least 2 labels to choose from")
        return self


class TaggerExampleIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    content_id: str = Field(min_length=1, max_length=36)
    label: str = Field(min_length=1, max_length=200)

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        return normalise_tag(v)


class TaggerExamplesIn(RequestModel):
    model_config = ConfigDict(extra="forbid")

    examples: list[TaggerExampleIn] = Field(min_length=1, max_length=MAX_EXAMPLES_PER_REQUEST)


class TaggerExamplesAdded(BaseModel):
    added: int = Field(description="new examples; ones already stored are not counted twice")
    examples_per_label: dict[str, int]


class TaggerPublic(BaseModel):
    id: str
    name: str
    kind: TaggerKind
    labels: list[str]
    mode: FacetMode = "multi"
    model: str = Field(description="the registry name of its model versions")
    active_version: str | None
    examples_per_label: dict[str, int] = Field(
        description="explicit examples plus accepted/manual tags with a label of this tagger"
    )
    metrics: dict[str, Any] | None = Field(description="cross-validated, of the active version")
    trained_at: datetime | None
    created_at: datetime


class TaggerList(BaseModel):
    items: list[TaggerPublic]
