"""Which WordNet parent concepts of an image's classes become tags: one tag per concept.

ImageNet classes come with their WordNet parents (``taxonomy.json``), and a parent scores the
summed probability of the classes under it. Taken as is, a photo of corn gets ``corn``,
``kernel``, ``grain``, ``seed``, all at 0.824: each parent repeats the class below it. The rule
(documented with the curated list in ``docs/image-tags.md``):

1. **Never a tag** (``NEVER_TAGS``): abstract or functional WordNet nodes that name a role, not
   something one sees (``shape``, ``ingredient``, ``device``, ``covering``, ...).
2. **Single-child links** never become tags: a parent whose classes are exactly those of a more
   specific tag (``kernel`` and ``grain`` cover only ``corn``) can only ever repeat it. Of a
   group of parents with the same classes, only the curated one, else the most specific, stays.
   Decided once per taxonomy, when the model loads (``plan_tags``).
3. **Per photo** (``select``), a remaining parent is a tag when it says something the tags below
   it do not: its score is at least ``MIN_GAIN`` above its best visible child's (more than one
   of its classes contributes, or classes too unlikely to show on their own add up), or it is
   on the curated list of parents editors use (``CURATED``: ``cat``, ``food``, ``vehicle``...).

Classes (the model's own outputs) are always candidates; their ``level`` is ``"class"``, a
parent's is ``"concept"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Level = Literal["class", "concept"]

# A parent must add at least this much probability to its best visible child to be shown. One
# point of probability: below it the two scores read the same to an editor, and the extra mass
# is the residue of hundreds of unlikely classes rather than a second thing in the photo.
MIN_GAIN = 0.01


def _names(text: str) -> frozenset[str]:
    return frozenset(s.strip() for s in text.split(";") if s.strip())


# Abstract and functional nodes: the top of WordNet, roles ("ingredient", "covering",
# "fastener"), shapes, and name collisions of unrelated senses ("course": a meal course and a
# plate; "communication": signs and traffic lights). Many are already left out of the shipped
# taxonomy (``workers/training/build/imagenet_taxonomy.py``); listing them here as well keeps
# taxonomies built before this rule, and any rebuilt one, to the same tags.
NEVER_TAGS = _names(
    """
    entity; physical entity; object; whole; abstraction; artifact; matter; substance;
    instrumentality; device; container; covering; structure; commodity; shape; round shape;
    flavorer; ingredient; liquid; communication; course; control; framework; sheet; bar;
    decoration; filter; trap; reflector; transducer; electro-acoustic transducer;
    electrical device; electronic device; electronic equipment; communication system;
    supporting structure; movable barrier; floor cover; cloth covering; protective garment;
    piece of cloth; fastener; weight; stick; staff; gear; housing; shelter; reservoir; sheath;
    cutter; cutting implement; edge tool; machine; white goods; plaything; breathing device;
    data input device; peripheral; source of illumination; light; top; attire; plant;
    game equipment; measuring instrument; scientific instrument; timer
    """
)

# Parents an editor files photos under, kept even when one class carries all their score (a
# tabby photo is still a "cat" photo). Every entry covers several ImageNet classes (a test
# checks it on the shipped taxonomy), so none of them is a single-child link.
CURATED = _names(
    """
    animal; dog; cat; big cat; bird; bird of prey; parrot; duck; fish; shark; insect;
    butterfly; beetle; spider; reptile; snake; lizard; turtle; frog; crab; whale; monkey; ape;
    bear; wolf; fox; rabbit; rodent; person;
    vehicle; car; truck; bus; bicycle; locomotive; boat; ship; aircraft;
    food; fruit; vegetable; bread; dessert; sandwich; beverage; flower; fungus;
    building; house; bridge; place of worship; shop; mountain; shore;
    furniture; chair; table; clothing; footwear; shoe; hat; tool; musical instrument; guitar;
    piano; weapon; gun; computer; camera; clock; lamp
    """
)


@dataclass(slots=True)
class TagPlan:
    """The tags a taxonomy can produce, with what ``select`` needs to pick among them."""

    names: list[str]
    members: list[list[int]]  # class indices each tag sums, in the model's logit order
    levels: list[Level]
    curated: np.ndarray  # (tags,) bool
    # Every candidate tag whose classes are a strict subset of this tag's: the max over them is
    # the best child, whichever of them a photo shows. Empty for classes.
    below: list[np.ndarray]
    breadth: np.ndarray  # (tags,) number of classes; a child is always narrower than its parent


def plan_tags(classes: Sequence[Mapping[str, Any]]) -> TagPlan:
    """Candidate tags of a taxonomy (``[{"name", "ancestors"}, ...]``, in logit order)."""
    class_names = {str(c["name"]) for c in classes}
    members: dict[str, set[int]] = {}
    depth: dict[str, int] = {}  # smallest position in any class's chain: lower is more specific
    for i, c in enumerate(classes):
        for d, name in enumerate((c["name"], *c["ancestors"])):
            # A class's name means that class only. A few words are also another sense's
            # parent ("racer": a race car, and greyhounds); summing both would put the class
            # on photos of the other sense, so the parent sense gives way.
            if d > 0 and name in class_names:
                continue
            if name in NEVER_TAGS and name not in class_names:
                continue
            members.setdefault(name, set()).add(i)
            depth[name] = min(depth.get(name, d), d)
    # Tags with the same classes always score the same: keep one of each group (rule 2).
    groups: dict[frozenset[int], list[str]] = {}
    for name, rows in members.items():
        groups.setdefault(frozenset(rows), []).append(name)
    kept: set[str] = set()
    for group in groups.values():
        kept.add(min(group, key=lambda n: (n not in class_names, n not in CURATED, depth[n], n)))
    # First-seen order, as the taxonomy lists them, so tag indices are stable across loads.
    names = [n for n in members if n in kept]
    index = {n: j for j, n in enumerate(names)}
    sets = [members[n] for n in names]
    # A strict subset of a tag's classes lies on the chains of those classes, so only tags
    # sharing a chain with it are compared: a few thousand set tests, not tags squared.
    on_chain: dict[int, set[int]] = {}
    for i, c in enumerate(classes):
        for name in (c["name"], *c["ancestors"]):
            if name in index and i in members[name]:
                on_chain.setdefault(i, set()).add(index[name])
    below: list[np.ndarray] = []
    for j, rows in enumerate(sets):
        near = set().union(*(on_chain[i] for i in rows)) if len(rows) > 1 else set()
        kids = sorted(k for k in near if k != j and sets[k] < rows)
        below.append(np.array(kids, dtype=np.int64))
    return TagPlan(
        names=names,
        members=[sorted(rows) for rows in sets],
        levels=["class" if n in class_names else "concept" for n in names],
        curated=np.array([n in CURATED for n in names], dtype=bool),
        below=below,
        breadth=np.array([len(rows) for rows in sets], dtype=np.int64),
    )


def select(plan: TagPlan, scores: np.ndarray, candidates: Iterable[int]) -> list[int]:
    """Of ``candidates`` (tag indices above the caller's threshold), those that are tags (rule 3).

    A parent is compared with its visible children only: a child that is not shown (below the
    threshold, or itself dropped) says nothing to the editor, so the parent may say it.
    """
    wanted = sorted(set(candidates), key=lambda j: int(plan.breadth[j]))  # children first
    shown = np.zeros(len(plan.names), dtype=bool)
    for j in wanted:
        kids = plan.below[j]
        if plan.levels[j] == "class" or plan.curated[j] or kids.size == 0:
            shown[j] = True
            continue
        visible = kids[shown[kids]]
        best = float(scores[visible].max()) if visible.size else 0.0
        shown[j] = float(scores[j]) - best >= MIN_GAIN
    return [j for j in wanted if shown[j]]
