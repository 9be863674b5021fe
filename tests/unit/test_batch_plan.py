"""plan_batches: how the text embedder groups sequences into model runs."""

from __future__ import annotations

import itertools
import random

import pytest

from workers.tagging.text_batching import plan_batches


def _cost(lengths: list[int], runs: list[list[int]], run_cost: int) -> int:
    return sum(run_cost + len(r) * max(lengths[i] for i in r) for r in runs)


def _brute_force(lengths: list[int], max_batch: int, run_cost: int, max_tokens: int) -> int:
    """The cheapest split of the sorted lengths into contiguous runs, by trying every split."""
    ordered = sorted(lengths)
    n = len(ordered)
    best = None
    for mask in range(1 << (n - 1)):
        cuts = [0, *(i + 1 for i in range(n - 1) if mask >> i & 1), n]
        runs = [ordered[a:b] for a, b in itertools.pairwise(cuts)]
        if any(len(r) > max_batch or (len(r) > 1 and len(r) * r[-1] > max_tokens) for r in runs):
            continue
        cost = sum(run_cost + len(r) * r[-1] for r in runs)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


def _check_valid(
    lengths: list[int], runs: list[list[int]], max_batch: int, max_tokens: int
) -> None:
    assert sorted(i for r in runs for i in r) == list(range(len(lengths)))
    flat = [lengths[i] for r in runs for i in r]
    assert flat == sorted(flat), "runs follow the sorted order"
    for r in runs:
        assert 1 <= len(r) <= max_batch
        assert len(r) == 1 or len(r) * max(lengths[i] for i in r) <= max_tokens


@pytest.mark.parametrize("seed", range(40))
def test_plan_is_valid_and_optimal(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 11)
    lengths = [rng.choice([3, 4, 5, 8, 20, 40, 43, 120, 256]) for _ in range(n)]
    max_batch, run_cost, max_tokens = rng.choice([2, 4, 32]), rng.choice([0, 12, 100]), 512
    runs = plan_batches(lengths, max_batch=max_batch, run_cost=run_cost, max_tokens=max_tokens)
    _check_valid(lengths, runs, max_batch, max_tokens)
    assert _cost(lengths, runs, run_cost) == _brute_force(lengths, max_batch, run_cost, max_tokens)


def test_a_long_text_does_not_pad_short_ones() -> None:
    lengths = [10] * 31 + [200]
    runs = plan_batches(lengths, max_batch=32)
    assert [len(r) for r in runs] == [31, 1]
    assert runs[1] == [31]


def test_equal_lengths_fill_batches_up_to_the_limits() -> None:
    assert [len(r) for r in plan_batches([8] * 70, max_batch=32)] == [32, 32, 6]
    # 32 x 100 padded tokens is over the per-run budget: the same texts go in smaller runs.
    runs = plan_batches([100] * 32, max_batch=32, max_tokens=2048)
    assert all(len(r) * 100 <= 2048 for r in runs)
    assert sum(map(len, runs)) == 32


def test_empty_and_single() -> None:
    assert plan_batches([]) == []
    assert plan_batches([300]) == [[0]]  # one sequence is never refused, whatever its length
