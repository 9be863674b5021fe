"""One tag per image concept (workers/tagging/concepts.py) on the taxonomy the project ships.

No model here: class probabilities are written by hand (the chains from issue 13) or drawn at
random, and scored the way the image tagger scores them (a tag sums its classes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workers.tagging.concepts import CURATED, MIN_GAIN, NEVER_TAGS, TagPlan, plan_tags, select

TAXONOMY = Path(__file__).resolve().parents[2] / "workers/training/data/imagenet_taxonomy.json"


@pytest.fixture(scope="module")
def classes() -> list[dict]:
    return json.loads(TAXONOMY.read_text())["classes"]


@pytest.fixture(scope="module")
def plan(classes: list[dict]) -> TagPlan:
    return plan_tags(classes)


def class_probs(classes: list[dict], weights: dict[str, float]) -> np.ndarray:
    """A softmax-like row: the named classes, the rest spread evenly over the other classes."""
    row = np.zeros(len(classes))
    index = {c["name"]: i for i, c in enumerate(classes)}
    for name, w in weights.items():
        row[index[name]] = w
    rest = 1.0 - row.sum()
    row[row == 0] = rest / np.count_nonzero(row == 0)
    return row


def tags(plan: TagPlan, probs: np.ndarray, min_score: float = 0.05) -> dict[str, float]:
    scores = np.array([probs[m].sum() for m in plan.members])
    shown = select(plan, scores, np.flatnonzero(scores >= min_score).tolist())
    return {plan.names[j]: float(scores[j]) for j in shown}


def chain(classes: list[dict], name: str) -> list[str]:
    return next(c["ancestors"] for c in classes if c["name"] == name)


@pytest.mark.parametrize(
    ("photo", "repeats", "expected"),
    [
        # corn 0.824: kernel, grain, seed repeat it; fruit is a curated parent.
        ("corn", {"kernel", "grain", "seed"}, {"corn", "fruit"}),
        ("bubble", {"globule", "ball", "sphere", "round shape", "shape"}, {"bubble"}),
        ("guacamole", {"dip", "condiment", "flavorer", "ingredient"}, {"guacamole", "food"}),
    ],
)
def test_single_child_chains_collapse_to_the_class(
    classes: list[dict], plan: TagPlan, photo: str, repeats: set[str], expected: set[str]
) -> None:
    own = {photo, *chain(classes, photo)}
    assert repeats <= own  # the shipped taxonomy has the chain
    # (The other 17.6% is spread evenly, which makes "animal" gather 7%: not this chain.)
    got = tags(plan, class_probs(classes, {photo: 0.824}))
    assert set(got) & own == expected


def test_parent_gathering_several_classes_is_a_tag(classes: list[dict], plan: TagPlan) -> None:
    # Two condiments: "condiment" says what neither class says alone.
    got = tags(plan, class_probs(classes, {"guacamole": 0.4, "carbonara": 0.3}))
    assert got["condiment"] == pytest.approx(0.7, abs=0.01)
    assert {"guacamole", "carbonara", "food"} <= set(got)
    # One seed and a trace of another: "seed" would only repeat "corn".
    got = tags(plan, class_probs(classes, {"corn": 0.8, "rapeseed": 0.002}))
    assert "seed" not in got and "corn" in got


def test_parent_compares_with_visible_children_only(classes: list[dict], plan: TagPlan) -> None:
    # Three cat breeds, none above the threshold: "domestic cat" is the only way to say it.
    got = tags(plan, class_probs(classes, {"tabby": 0.03, "tiger cat": 0.03, "persian cat": 0.03}))
    assert "domestic cat" in got and not {"tabby", "tiger cat"} & set(got)


def test_abstract_and_single_child_nodes_are_never_candidates(
    classes: list[dict], plan: TagPlan
) -> None:
    names = set(plan.names)
    class_names = {c["name"] for c in classes}
    assert class_names <= names
    assert not (NEVER_TAGS - class_names) & names
    assert not {"kernel", "grain", "globule", "sphere", "dip", "coffee"} & names
    sets = [frozenset(m) for m in plan.members]
    assert len(set(sets)) == len(sets), "two candidate tags always score the same"


def test_curated_parents_cover_several_classes(plan: TagPlan) -> None:
    """The curated list names real parents, none of them a single-child link."""
    index = {n: j for j, n in enumerate(plan.names)}
    assert index.keys() >= CURATED, sorted(CURATED - index.keys())
    assert all(len(plan.members[index[n]]) > 1 for n in CURATED)
    assert not CURATED & NEVER_TAGS


def test_no_tag_repeats_its_child_on_random_photos(classes: list[dict], plan: TagPlan) -> None:
    """Property: in a photo's tags, a parent that is not curated scores at least MIN_GAIN more
    than each of its tags below, and no two tags cover the same classes."""
    rng = np.random.default_rng(13)
    concepts = [j for j, level in enumerate(plan.levels) if level == "concept"]
    sets = [set(m) for m in plan.members]
    for _ in range(400):
        # A peaked photo: 1-4 classes from one parent concept (siblings make parents gather),
        # sometimes one stray class, and Dirichlet background over all 1000.
        family = plan.members[concepts[rng.integers(len(concepts))]]
        picked = rng.choice(family, size=min(len(family), rng.integers(1, 5)), replace=False)
        probs = rng.dirichlet(np.full(len(classes), 0.05)) * rng.uniform(0.02, 0.3)
        probs[picked] += rng.dirichlet(np.ones(len(picked))) * (1.0 - probs.sum())
        if rng.random() < 0.3:
            probs[rng.integers(len(classes))] += 0.05
        probs /= probs.sum()
        scores = np.array([probs[m].sum() for m in plan.members])
        shown = select(plan, scores, np.flatnonzero(scores >= 0.05).tolist())
        for a in shown:
            for b in shown:
                if a == b:
                    continue
                assert sets[a] != sets[b]
                if sets[b] < sets[a] and not plan.curated[a]:
                    assert scores[a] - scores[b] >= MIN_GAIN, (plan.names[a], plan.names[b])
