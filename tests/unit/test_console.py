"""The console's pure parts: charts, grouping, the sign-in redirect target."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest

from services.gateway.console.auth import _local_path
from services.gateway.console.plots import Series, line_chart, nice_ticks
from services.gateway.console.views import facet_options, group_duplicates


@pytest.mark.parametrize(
    ("lo", "hi"), [(1, 50), (0, 0.72), (1.81, 1.87), (5, 5), (-3, 2), (0, 1e-6)]
)
def test_ticks_cover_the_range_in_round_steps(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    steps = {round(b - a, 12) for a, b in pairwise(ticks)}
    assert len(steps) == 1 and 2 <= len(ticks) <= 12


def test_chart_is_well_formed_svg_with_a_title_and_every_point() -> None:
    svg = line_chart(
        [Series("model <a&b>", [(1, 0.2), (10, 0.5)]), Series("popularity", [(1, 0.1)])],
        title="NDCG & recall",
        x_label="k",
        y_label="NDCG@k",
        chart_id="c1",
    )
    root = ET.fromstring(str(svg))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.find(f"{ns}title").text == "NDCG & recall"  # type: ignore[union-attr]
    assert len(root.findall(f"{ns}circle")) == 3
    assert root.get("role") == "img"


def test_chart_without_points_says_so() -> None:
    out = line_chart([Series("x", [])], title="FID", x_label="s", y_label="FID", chart_id="c")
    assert "no figures" in out and "<svg" not in out


def test_near_duplicates_sit_under_their_original_when_both_are_listed() -> None:
    items = [
        {"id": "a", "duplicate_of": None},
        {"id": "b", "duplicate_of": "a"},
        {"id": "c", "duplicate_of": "gone"},
    ]
    cards = group_duplicates(items)
    assert [c.item["id"] for c in cards] == ["a", "c"]
    assert [d["id"] for d in cards[0].duplicates] == ["b"]


def test_facet_choices_follow_the_vocabulary() -> None:
    vocabulary = {
        "facets": [{"name": "section"}, {"name": "empty"}],
        "entries": [
            {"name": "sports", "facet": "section"},
            {"name": "cats", "facet": None},
            {"name": "business", "facet": "section"},
        ],
    }
    assert facet_options(vocabulary) == [("section", ["sports", "business"])]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/console/jobs?status=running", "/console/jobs?status=running"),
        ("https://elsewhere.example/console/jobs", "/console/content"),
        ("//elsewhere.example/console/", "/console/content"),
        ("/v1/content", "/console/content"),
        ("/console/api/content", "/console/content"),
        ("/console/login", "/console/content"),
        (None, "/console/content"),
    ],
)
def test_sign_in_returns_only_to_console_pages(given: str | None, expected: str) -> None:
    assert _local_path(given) == expected
