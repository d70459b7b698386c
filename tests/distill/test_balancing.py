"""Quotas: they sum to the stage budget, follow the paper's formulas, and split head from tail."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distill_jax.distill import balancing

POOL = {"a": 700, "b": 200, "c": 60, "d": 30, "e": 10}


def _quotas(policy, stage, budget=200, remaining=None, num_stages=5):
    return balancing.stage_quotas(
        policy,
        stage=stage,
        num_stages=num_stages,
        stage_budget=budget,
        pool_sizes=POOL,
        remaining=remaining or POOL,
        rng=np.random.default_rng(0),
    )


def test_naive_is_uniform():
    assert _quotas("naive", 0) == {d: 40 for d in POOL}


def test_adaptive_moves_from_natural_to_uniform():
    # Stage 0: proportional to n_d / N (1000 total): 140, 40, 12, 6, 2.
    assert _quotas("adaptive", 0) == {"a": 140, "b": 40, "c": 12, "d": 6, "e": 2}
    # Stage i: ((K-i)/K) n_d/N b + (i/K) b/l, e.g. stage 4 of 5 for "e": 0.2*0.01*200 + 0.8*40 = 32.4.
    q4 = _quotas("adaptive", 4)
    assert sum(q4.values()) == 200
    assert q4["e"] in (32, 33) and q4["a"] in (60, 61)
    # The tail's share grows every stage.
    shares = [_quotas("adaptive", i)["e"] for i in range(5)]
    assert shares == sorted(shares) and shares[0] < shares[-1]


def test_random_never_exceeds_what_is_left():
    remaining = {"a": 5, "b": 3, "c": 0, "d": 1, "e": 0}
    q = _quotas("random", 1, budget=200, remaining=remaining)
    assert q == remaining  # Asked for more than exists: takes everything.
    q = _quotas("random", 1, budget=6, remaining=remaining)
    assert sum(q.values()) == 6 and all(q[d] <= remaining[d] for d in q)


def test_head_tail_split():
    quotas = {"a": 40, "b": 40, "e": 40}
    head, tail = balancing.split_head_tail(quotas, {"a": 700, "b": 40, "e": 10})
    assert head == ["a", "b"] and tail == ["e"]


def test_stage_budget_rolls_unspent_forward():
    assert balancing.stage_budget(1000, 0, 0, 5) == 200
    assert balancing.stage_budget(1000, 150, 1, 5) == 212  # 850 left over 4 stages.
    assert balancing.stage_budget(1000, 990, 4, 5) == 10  # The last stage spends the rest.
    assert balancing.stage_budget(1000, 1000, 4, 5) == 0


@given(
    shares=st.dictionaries(st.sampled_from("abcdefgh"), st.floats(0, 100), min_size=1),
    total=st.integers(0, 10_000),
    rotation=st.integers(0, 20),
)
def test_largest_remainder_sums_exactly(shares, total, rotation):
    quotas = balancing.largest_remainder(shares, total, rotation)
    assert sum(quotas.values()) == total
    weight = sum(shares.values())
    if weight > 0:
        for d, q in quotas.items():
            assert abs(q - total * shares[d] / weight) < 1 + 1e-9


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown distillation method 'fancy'.*adaptive"):
        balancing.get_method("fancy")


def test_fractional_budgets_split_exactly():
    # usd budgets: flooring would plan nothing in the early stages.
    assert balancing.stage_budget(0.05, 0.0, 0, 3) == pytest.approx(0.05 / 3)
    assert balancing.stage_budget(0.05, 0.01, 1, 3) == pytest.approx(0.02)
    assert balancing.stage_budget(0.05, 0.04, 2, 3) == pytest.approx(0.01)
