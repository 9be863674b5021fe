"""Errors the recommender's domain modules raise; ``api/errors.py`` maps each to an HTTP answer."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base of the recommender's domain errors."""


class ItemNotFound(RecommenderError):
    """The item named in the request is not in the tenant's catalogue."""

    def __init__(self, item_key: str) -> None:
        super().__init__(f"item {item_key} not found")
        self.item_key = item_key
