"""Every recommender model, by name: the registry persisted models are loaded through."""

from __future__ import annotations

from ranking.base import (
    ModelFormatError,
    NotFittedError,
    Popularity,
    Recommender,
    recommend,
    top_k,
)
from ranking.blend import Blend
from ranking.factors import ALS, BPR, PureSVD
from ranking.neighbours import EASE, ItemKNN, RP3beta

MODELS: dict[str, type[Recommender]] = Recommender.registry
load_model = Recommender.load
from_description = Recommender.from_description

__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "MODELS",
    "Blend",
    "ItemKNN",
    "ModelFormatError",
    "NotFittedError",
    "Popularity",
    "PureSVD",
    "RP3beta",
    "Recommender",
    "from_description",
    "load_model",
    "recommend",
    "top_k",
]
