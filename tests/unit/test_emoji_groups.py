"""Unicode's emoji groups as code point runs: the table, its lookup and its generator."""

from __future__ import annotations

import itertools

from workers.training.build.emoji_groups import (
    GROUPS,
    OPENMOJI_BLOCKS,
    RUNS,
    emoji_group,
    openmoji_block,
    runs_from_emoji_test,
)

SAMPLE = """\
# group: Animals & Nature
# subgroup: animal-mammal
1F412                                      ; fully-qualified     # 🐒 E0.6 monkey
1F415                                      ; fully-qualified     # 🐕 E0.7 dog
1F415 200D 1F9BA                           ; fully-qualified     # 🐕‍🦺 E12.0 service dog
1F416                                      ; fully-qualified     # 🐖 E1.0 pig

# group: Food & Drink
1F347                                      ; fully-qualified     # 🍇 E0.6 grapes
2615 FE0F                                  ; fully-qualified     # ☕️ E0.6 hot beverage
1F348                                      ; fully-qualified     # 🍈 E0.6 melon
"""


def test_runs_join_code_points_of_one_group_that_follow_each_other() -> None:
    # Sequences are left out; a run spans the gap between its emoji (2615 to 1F347).
    assert runs_from_emoji_test(SAMPLE) == [
        (0x2615, 0x1F348, "food"),
        (0x1F412, 0x1F416, "nature"),
    ]


def test_the_table_is_sorted_disjoint_and_uses_known_groups() -> None:
    assert all(a <= b for a, b, _ in RUNS)
    assert all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(RUNS))
    assert {g for _, _, g in RUNS} == set(GROUPS.values())


def test_lookup_inside_a_run_and_nearest_outside() -> None:
    assert emoji_group(0x1F600) == "smileys"  # GRINNING FACE
    assert emoji_group(0x1F34E) == "food"  # RED APPLE
    assert emoji_group(0x1F3C1) == "flags"  # CHEQUERED FLAG
    # 1FAD7 POURING LIQUID (Emoji 14) is not in the table; the foods before it are nearest.
    assert emoji_group(0x1FAD7) == "food"
    assert emoji_group(0x10) == RUNS[0][2]
    assert emoji_group(0x10FFFF) == RUNS[-1][2]


def test_openmoji_blocks_of_64() -> None:
    assert openmoji_block(0xE000) == openmoji_block(0xE03F) == "nature"
    assert openmoji_block(0xE0C4) == "food"
    assert openmoji_block(0xE400) is None
    assert all(start % 64 == 0 for start in OPENMOJI_BLOCKS)
