"""Unicode's emoji groups, as runs of code points, for tagging the bundled icons.

The OpenMoji wheel ships SVGs named by code point and no group data, and Python's
``unicodedata`` has names but no groups. :data:`RUNS` is derived from Unicode's
``emoji-test.txt`` (UTS #51, version 13.0; Unicode License v3, (c) Unicode, Inc.), whose
``# group:`` headers put each emoji in one of ten groups. Emoji were allocated in themed runs
(animals, food, transport), so a newer emoji the table lacks takes the group of the nearest
code point it has. Regenerate with ``python -m workers.training.build.emoji_groups
emoji-test.txt``.

OpenMoji's own extras sit in the private use area, allocated in blocks of 64 code points per
subgroup (``E000`` animals and nature, ``E0C0`` food, ...): :data:`OPENMOJI_BLOCKS`.
"""

from __future__ import annotations

import bisect
import re
import sys

# emoji-test.txt's group headers, shortened.
GROUPS = {
    "Smileys & Emotion": "smileys",
    "People & Body": "people",
    "Component": "component",
    "Animals & Nature": "nature",
    "Food & Drink": "food",
    "Travel & Places": "travel",
    "Activities": "activities",
    "Objects": "objects",
    "Symbols": "symbols",
    "Flags": "flags",
}


def runs_from_emoji_test(text: str) -> list[tuple[int, int, str]]:
    """Maximal runs of single-code-point emoji (in code point order) that share a group."""
    group_of: dict[int, str] = {}
    group = ""
    for line in text.splitlines():
        if m := re.match(r"# group: (.*)", line):
            group = GROUPS[m.group(1).strip()]
        elif line.strip() and not line.startswith("#"):
            codes = [int(c, 16) for c in line.split(";")[0].split() if c != "FE0F"]
            if len(codes) == 1:
                group_of.setdefault(codes[0], group)
    runs: list[tuple[int, int, str]] = []
    for code in sorted(group_of):
        if runs and runs[-1][2] == group_of[code]:
            runs[-1] = (runs[-1][0], code, runs[-1][2])
        else:
            runs.append((code, code, group_of[code]))
    return runs


def emoji_group(code: int) -> str:
    """The group of an emoji code point: the run holding it, else the nearest run."""
    i = bisect.bisect_right(_STARTS, code) - 1
    if i >= 0 and code <= RUNS[i][1]:
        return RUNS[i][2]
    before = code - RUNS[i][1] if i >= 0 else None
    after = RUNS[i + 1][0] - code if i + 1 < len(RUNS) else None
    if after is None or (before is not None and before <= after):
        return RUNS[i][2]
    return RUNS[i + 1][2]


def openmoji_block(code: int) -> str | None:
    """OpenMoji's subgroup for a private-use code point, by its block of 64."""
    return OPENMOJI_BLOCKS.get(code & ~0x3F)


# OpenMoji's extras: the first code point of each block of 64 and the block's subgroup
# (OpenMoji's data/extras-openmoji.csv); blocks not listed hold other extras.
OPENMOJI_BLOCKS: dict[int, str] = {
    0xE000: "nature",
    0xE040: "brand",
    0xE080: "emergency",
    0xE0C0: "food",
    0xE100: "interaction",
    0xE140: "objects",
    0xE180: "people",
    0xE1C0: "technology",
    0xE200: "travel",
    0xE240: "ui-element",
    0xE280: "smileys",
    0xE2C0: "climate-environment",
    0xE300: "healthcare",
    0xE340: "gardening",
    0xE380: "symbols",
}

# (first code point, last code point, group): generated, do not edit by hand.
RUNS: tuple[tuple[int, int, str], ...] = (
    (0xA9, 0x21AA, "symbols"),
    (0x231A, 0x231B, "travel"),
    (0x2328, 0x2328, "objects"),
    (0x23CF, 0x23EF, "symbols"),
    (0x23F0, 0x23F3, "travel"),
    (0x23F8, 0x25FE, "symbols"),
    (0x2600, 0x2604, "travel"),
    (0x260E, 0x260E, "objects"),
    (0x2611, 0x2611, "symbols"),
    (0x2614, 0x2614, "travel"),
    (0x2615, 0x2615, "food"),
    (0x2618, 0x2618, "nature"),
    (0x261D, 0x261D, "people"),
    (0x2620, 0x2620, "smileys"),
    (0x2622, 0x2638, "symbols"),
    (0x2639, 0x263A, "smileys"),
    (0x2640, 0x2653, "symbols"),
    (0x265F, 0x2666, "activities"),
    (0x2668, 0x2668, "travel"),
    (0x267B, 0x267F, "symbols"),
    (0x2692, 0x2692, "objects"),
    (0x2693, 0x2693, "travel"),
    (0x2694, 0x2694, "objects"),
    (0x2695, 0x2695, "symbols"),
    (0x2696, 0x2699, "objects"),
    (0x269B, 0x26A0, "symbols"),
    (0x26A1, 0x26A1, "travel"),
    (0x26A7, 0x26AB, "symbols"),
    (0x26B0, 0x26B1, "objects"),
    (0x26BD, 0x26BE, "activities"),
    (0x26C4, 0x26C8, "travel"),
    (0x26CE, 0x26CE, "symbols"),
    (0x26CF, 0x26D3, "objects"),
    (0x26D4, 0x26D4, "symbols"),
    (0x26E9, 0x26F2, "travel"),
    (0x26F3, 0x26F3, "activities"),
    (0x26F4, 0x26F5, "travel"),
    (0x26F7, 0x26F7, "people"),
    (0x26F8, 0x26F8, "activities"),
    (0x26F9, 0x26F9, "people"),
    (0x26FA, 0x26FD, "travel"),
    (0x2702, 0x2702, "objects"),
    (0x2705, 0x2705, "symbols"),
    (0x2708, 0x2708, "travel"),
    (0x2709, 0x2709, "objects"),
    (0x270A, 0x270D, "people"),
    (0x270F, 0x2712, "objects"),
    (0x2714, 0x2721, "symbols"),
    (0x2728, 0x2728, "activities"),
    (0x2733, 0x2734, "symbols"),
    (0x2744, 0x2744, "travel"),
    (0x2747, 0x2757, "symbols"),
    (0x2763, 0x2764, "smileys"),
    (0x2795, 0x2B1C, "symbols"),
    (0x2B50, 0x2B50, "travel"),
    (0x2B55, 0x3299, "symbols"),
    (0x1F004, 0x1F0CF, "activities"),
    (0x1F170, 0x1F251, "symbols"),
    (0x1F300, 0x1F32C, "travel"),
    (0x1F32D, 0x1F330, "food"),
    (0x1F331, 0x1F335, "nature"),
    (0x1F336, 0x1F336, "food"),
    (0x1F337, 0x1F33C, "nature"),
    (0x1F33D, 0x1F33D, "food"),
    (0x1F33E, 0x1F343, "nature"),
    (0x1F344, 0x1F37F, "food"),
    (0x1F380, 0x1F381, "activities"),
    (0x1F382, 0x1F382, "food"),
    (0x1F383, 0x1F384, "activities"),
    (0x1F385, 0x1F385, "people"),
    (0x1F386, 0x1F38B, "activities"),
    (0x1F38C, 0x1F38C, "flags"),
    (0x1F38D, 0x1F391, "activities"),
    (0x1F392, 0x1F393, "objects"),
    (0x1F396, 0x1F397, "activities"),
    (0x1F399, 0x1F39E, "objects"),
    (0x1F39F, 0x1F39F, "activities"),
    (0x1F3A0, 0x1F3A2, "travel"),
    (0x1F3A3, 0x1F3A3, "activities"),
    (0x1F3A4, 0x1F3A5, "objects"),
    (0x1F3A6, 0x1F3A6, "symbols"),
    (0x1F3A7, 0x1F3A7, "objects"),
    (0x1F3A8, 0x1F3A8, "activities"),
    (0x1F3A9, 0x1F3A9, "objects"),
    (0x1F3AA, 0x1F3AA, "travel"),
    (0x1F3AB, 0x1F3AB, "activities"),
    (0x1F3AC, 0x1F3AC, "objects"),
    (0x1F3AD, 0x1F3B4, "activities"),
    (0x1F3B5, 0x1F3BC, "objects"),
    (0x1F3BD, 0x1F3C0, "activities"),
    (0x1F3C1, 0x1F3C1, "flags"),
    (0x1F3C2, 0x1F3C4, "people"),
    (0x1F3C5, 0x1F3C6, "activities"),
    (0x1F3C7, 0x1F3C7, "people"),
    (0x1F3C8, 0x1F3C9, "activities"),
    (0x1F3CA, 0x1F3CC, "people"),
    (0x1F3CD, 0x1F3CE, "travel"),
    (0x1F3CF, 0x1F3D3, "activities"),
    (0x1F3D4, 0x1F3E6, "travel"),
    (0x1F3E7, 0x1F3E7, "symbols"),
    (0x1F3E8, 0x1F3ED, "travel"),
    (0x1F3EE, 0x1F3EE, "objects"),
    (0x1F3EF, 0x1F3F0, "travel"),
    (0x1F3F3, 0x1F3F4, "flags"),
    (0x1F3F5, 0x1F3F5, "nature"),
    (0x1F3F7, 0x1F3F7, "objects"),
    (0x1F3F8, 0x1F3F8, "activities"),
    (0x1F3F9, 0x1F3F9, "objects"),
    (0x1F3FA, 0x1F3FA, "food"),
    (0x1F3FB, 0x1F3FF, "component"),
    (0x1F400, 0x1F43F, "nature"),
    (0x1F440, 0x1F450, "people"),
    (0x1F451, 0x1F462, "objects"),
    (0x1F463, 0x1F478, "people"),
    (0x1F479, 0x1F47B, "smileys"),
    (0x1F47C, 0x1F47C, "people"),
    (0x1F47D, 0x1F480, "smileys"),
    (0x1F481, 0x1F483, "people"),
    (0x1F484, 0x1F484, "objects"),
    (0x1F485, 0x1F487, "people"),
    (0x1F488, 0x1F488, "travel"),
    (0x1F489, 0x1F48A, "objects"),
    (0x1F48B, 0x1F48C, "smileys"),
    (0x1F48D, 0x1F48E, "objects"),
    (0x1F48F, 0x1F48F, "people"),
    (0x1F490, 0x1F490, "nature"),
    (0x1F491, 0x1F491, "people"),
    (0x1F492, 0x1F492, "travel"),
    (0x1F493, 0x1F49F, "smileys"),
    (0x1F4A0, 0x1F4A0, "symbols"),
    (0x1F4A1, 0x1F4A1, "objects"),
    (0x1F4A2, 0x1F4A6, "smileys"),
    (0x1F4A7, 0x1F4A7, "travel"),
    (0x1F4A8, 0x1F4A9, "smileys"),
    (0x1F4AA, 0x1F4AA, "people"),
    (0x1F4AB, 0x1F4AD, "smileys"),
    (0x1F4AE, 0x1F4AE, "nature"),
    (0x1F4AF, 0x1F4AF, "smileys"),
    (0x1F4B0, 0x1F4B0, "objects"),
    (0x1F4B1, 0x1F4B2, "symbols"),
    (0x1F4B3, 0x1F4B9, "objects"),
    (0x1F4BA, 0x1F4BA, "travel"),
    (0x1F4BB, 0x1F4DA, "objects"),
    (0x1F4DB, 0x1F4DB, "symbols"),
    (0x1F4DC, 0x1F4F2, "objects"),
    (0x1F4F3, 0x1F4F6, "symbols"),
    (0x1F4F7, 0x1F4FF, "objects"),
    (0x1F500, 0x1F506, "symbols"),
    (0x1F507, 0x1F517, "objects"),
    (0x1F518, 0x1F524, "symbols"),
    (0x1F525, 0x1F525, "travel"),
    (0x1F526, 0x1F529, "objects"),
    (0x1F52A, 0x1F52A, "food"),
    (0x1F52B, 0x1F52D, "objects"),
    (0x1F52E, 0x1F52E, "activities"),
    (0x1F52F, 0x1F549, "symbols"),
    (0x1F54A, 0x1F54A, "nature"),
    (0x1F54B, 0x1F54D, "travel"),
    (0x1F54E, 0x1F54E, "symbols"),
    (0x1F550, 0x1F567, "travel"),
    (0x1F56F, 0x1F56F, "objects"),
    (0x1F570, 0x1F570, "travel"),
    (0x1F573, 0x1F573, "smileys"),
    (0x1F574, 0x1F575, "people"),
    (0x1F576, 0x1F576, "objects"),
    (0x1F577, 0x1F578, "nature"),
    (0x1F579, 0x1F579, "activities"),
    (0x1F57A, 0x1F57A, "people"),
    (0x1F587, 0x1F58D, "objects"),
    (0x1F590, 0x1F596, "people"),
    (0x1F5A4, 0x1F5A4, "smileys"),
    (0x1F5A5, 0x1F5B2, "objects"),
    (0x1F5BC, 0x1F5BC, "activities"),
    (0x1F5C2, 0x1F5E1, "objects"),
    (0x1F5E3, 0x1F5E3, "people"),
    (0x1F5E8, 0x1F5EF, "smileys"),
    (0x1F5F3, 0x1F5F3, "objects"),
    (0x1F5FA, 0x1F5FE, "travel"),
    (0x1F5FF, 0x1F5FF, "objects"),
    (0x1F600, 0x1F644, "smileys"),
    (0x1F645, 0x1F647, "people"),
    (0x1F648, 0x1F64A, "smileys"),
    (0x1F64B, 0x1F64F, "people"),
    (0x1F680, 0x1F6A2, "travel"),
    (0x1F6A3, 0x1F6A3, "people"),
    (0x1F6A4, 0x1F6A8, "travel"),
    (0x1F6A9, 0x1F6A9, "flags"),
    (0x1F6AA, 0x1F6AA, "objects"),
    (0x1F6AB, 0x1F6AB, "symbols"),
    (0x1F6AC, 0x1F6AC, "objects"),
    (0x1F6AD, 0x1F6B1, "symbols"),
    (0x1F6B2, 0x1F6B2, "travel"),
    (0x1F6B3, 0x1F6B3, "symbols"),
    (0x1F6B4, 0x1F6B6, "people"),
    (0x1F6B7, 0x1F6BC, "symbols"),
    (0x1F6BD, 0x1F6BD, "objects"),
    (0x1F6BE, 0x1F6BE, "symbols"),
    (0x1F6BF, 0x1F6BF, "objects"),
    (0x1F6C0, 0x1F6C0, "people"),
    (0x1F6C1, 0x1F6C1, "objects"),
    (0x1F6C2, 0x1F6C5, "symbols"),
    (0x1F6CB, 0x1F6CB, "objects"),
    (0x1F6CC, 0x1F6CC, "people"),
    (0x1F6CD, 0x1F6CD, "objects"),
    (0x1F6CE, 0x1F6CE, "travel"),
    (0x1F6CF, 0x1F6CF, "objects"),
    (0x1F6D0, 0x1F6D0, "symbols"),
    (0x1F6D1, 0x1F6D1, "travel"),
    (0x1F6D2, 0x1F6D2, "objects"),
    (0x1F6D5, 0x1F6D6, "travel"),
    (0x1F6D7, 0x1F6E1, "objects"),
    (0x1F6E2, 0x1F6F6, "travel"),
    (0x1F6F7, 0x1F6F7, "activities"),
    (0x1F6F8, 0x1F6FC, "travel"),
    (0x1F7E0, 0x1F7EB, "symbols"),
    (0x1F90C, 0x1F90C, "people"),
    (0x1F90D, 0x1F90E, "smileys"),
    (0x1F90F, 0x1F90F, "people"),
    (0x1F910, 0x1F917, "smileys"),
    (0x1F918, 0x1F91F, "people"),
    (0x1F920, 0x1F925, "smileys"),
    (0x1F926, 0x1F926, "people"),
    (0x1F927, 0x1F92F, "smileys"),
    (0x1F930, 0x1F93E, "people"),
    (0x1F93F, 0x1F93F, "activities"),
    (0x1F940, 0x1F940, "nature"),
    (0x1F941, 0x1F941, "objects"),
    (0x1F942, 0x1F944, "food"),
    (0x1F945, 0x1F94F, "activities"),
    (0x1F950, 0x1F96F, "food"),
    (0x1F970, 0x1F976, "smileys"),
    (0x1F977, 0x1F977, "people"),
    (0x1F978, 0x1F97A, "smileys"),
    (0x1F97B, 0x1F97F, "objects"),
    (0x1F980, 0x1F980, "food"),
    (0x1F981, 0x1F98F, "nature"),
    (0x1F990, 0x1F991, "food"),
    (0x1F992, 0x1F99D, "nature"),
    (0x1F99E, 0x1F99E, "food"),
    (0x1F99F, 0x1F9A9, "nature"),
    (0x1F9AA, 0x1F9AA, "food"),
    (0x1F9AB, 0x1F9AE, "nature"),
    (0x1F9AF, 0x1F9AF, "objects"),
    (0x1F9B0, 0x1F9B3, "component"),
    (0x1F9B4, 0x1F9B9, "people"),
    (0x1F9BA, 0x1F9BA, "objects"),
    (0x1F9BB, 0x1F9BB, "people"),
    (0x1F9BC, 0x1F9BD, "travel"),
    (0x1F9BE, 0x1F9BF, "people"),
    (0x1F9C0, 0x1F9CB, "food"),
    (0x1F9CD, 0x1F9CF, "people"),
    (0x1F9D0, 0x1F9D0, "smileys"),
    (0x1F9D1, 0x1F9E0, "people"),
    (0x1F9E1, 0x1F9E1, "smileys"),
    (0x1F9E2, 0x1F9E6, "objects"),
    (0x1F9E7, 0x1F9E9, "activities"),
    (0x1F9EA, 0x1F9EC, "objects"),
    (0x1F9ED, 0x1F9ED, "travel"),
    (0x1F9EE, 0x1F9F0, "objects"),
    (0x1F9F1, 0x1F9F1, "travel"),
    (0x1F9F2, 0x1F9F2, "objects"),
    (0x1F9F3, 0x1F9F3, "travel"),
    (0x1F9F4, 0x1F9F4, "objects"),
    (0x1F9F5, 0x1F9F6, "activities"),
    (0x1F9F7, 0x1F9F7, "objects"),
    (0x1F9F8, 0x1F9F8, "activities"),
    (0x1F9F9, 0x1F9FE, "objects"),
    (0x1F9FF, 0x1F9FF, "activities"),
    (0x1FA70, 0x1FA7A, "objects"),
    (0x1FA80, 0x1FA81, "activities"),
    (0x1FA82, 0x1FA82, "travel"),
    (0x1FA83, 0x1FA83, "objects"),
    (0x1FA84, 0x1FA86, "activities"),
    (0x1FA90, 0x1FA90, "travel"),
    (0x1FA91, 0x1FAA0, "objects"),
    (0x1FAA1, 0x1FAA2, "activities"),
    (0x1FAA3, 0x1FAA7, "objects"),
    (0x1FAA8, 0x1FAA8, "travel"),
    (0x1FAB0, 0x1FAB4, "nature"),
    (0x1FAB5, 0x1FAB5, "travel"),
    (0x1FAB6, 0x1FAB6, "nature"),
    (0x1FAC0, 0x1FAC2, "people"),
    (0x1FAD0, 0x1FAD6, "food"),
)
_STARTS = [r[0] for r in RUNS]


def main(argv: list[str]) -> int:
    """Print the table for an ``emoji-test.txt`` (e.g. from unicode.org's emoji data)."""
    with open(argv[1], encoding="utf-8") as f:
        runs = runs_from_emoji_test(f.read())
    print("RUNS: tuple[tuple[int, int, str], ...] = (")
    for first, last, group in runs:
        print(f'    (0x{first:X}, 0x{last:X}, "{group}"),')
    print(")")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
