"""How many examples each domain gets in each stage, and which domains are tail.

Per ../shared/papers/baldistill.md: with K stages, l domains and a stage budget b,
- naive (BalDistill-N): b / l per domain, every stage;
- adaptive (BalDistill-A): ((K-i)/K) * (n_d/N) * b + (i/K) * b / l -- the natural distribution at
  stage 0, moving linearly to uniform by the last stage;
- random: the per-domain counts of a uniform random sample of b from what is left of the pool.
A domain is *tail* in a stage when its quota exceeds what its pool has left; *head* otherwise.

Quotas are integers summing exactly to the stage budget (largest-remainder rounding), so no
budget is lost to rounding; ties go to domains in a stage-rotated order so the same domain does
not collect every leftover unit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np

Policy = Literal["random", "naive", "adaptive"]
Selection = Literal["random", "ifd"]


@dataclasses.dataclass(frozen=True)
class Method:
    """One way to spend the budget: a balancing policy, a head selection rule, and tail synthesis or not."""

    name: str
    policy: Policy
    selection: Selection
    synthesize: bool


# BalDistill's variants and the baselines of its Table 2/3, comparable in one command at one budget.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", "random", "random", synthesize=False),  # Random FT-CoT.
        Method("balanced", "naive", "random", synthesize=True),  # BalanceFT-CoT: balanced, no active selection.
        Method("active", "random", "ifd", synthesize=False),  # ActiveFT-CoT: IFD selection, no balancing.
        Method("naive", "naive", "ifd", synthesize=True),  # BalDistill-N.
        Method("adaptive", "adaptive", "ifd", synthesize=True),  # BalDistill-A.
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown distillation method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def largest_remainder(shares: Mapping[str, float], total: int, rotation: int = 0) -> dict[str, int]:
    """Integers proportional to `shares` that sum to `total` (Hamilton's method).

    Ties in the fractional parts are broken by domain order rotated by `rotation`.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    names = sorted(shares)
    weight = sum(max(shares[d], 0.0) for d in names)
    if not names:
        return {}
    if weight <= 0:
        shares, weight = {d: 1.0 for d in names}, float(len(names))
    exact = {d: total * max(shares[d], 0.0) / weight for d in names}
    quotas = {d: math.floor(exact[d]) for d in names}
    order = names[rotation % len(names) :] + names[: rotation % len(names)]
    order.sort(key=lambda d: -(exact[d] - quotas[d]))  # Stable: rotated order breaks ties.
    for d in order[: total - sum(quotas.values())]:
        quotas[d] += 1
    return quotas


def stage_quotas(
    policy: Policy,
    *,
    stage: int,
    num_stages: int,
    stage_budget: int,
    pool_sizes: Mapping[str, int],
    remaining: Mapping[str, int],
    rng: np.random.Generator,
) -> dict[str, int]:
    """Per-domain example counts for `stage` (0-based) that sum to `stage_budget`.

    `pool_sizes` are the original domain sizes n_d (the natural distribution); `remaining` what is
    still unbought. The random policy cannot ask for more than remains in total; the others can (the
    excess makes a domain tail).
    """
    domains = sorted(pool_sizes)
    if policy == "random":
        left = np.array([remaining.get(d, 0) for d in domains], np.int64)
        take = min(stage_budget, int(left.sum()))
        counts = rng.multivariate_hypergeometric(left, take) if take else np.zeros_like(left)
        return {d: int(c) for d, c in zip(domains, counts)}
    uniform = {d: 1.0 for d in domains}
    if policy == "naive":
        return largest_remainder(uniform, stage_budget, rotation=stage)
    if policy == "adaptive":
        total = sum(pool_sizes.values())
        mix = (stage / num_stages) if num_stages > 0 else 1.0
        shares = {d: (1 - mix) * pool_sizes[d] / total + mix / len(domains) for d in domains}
        return largest_remainder(shares, stage_budget, rotation=stage)
    raise ValueError(f"unknown balancing policy {policy!r}")


def split_head_tail(quotas: Mapping[str, int], remaining: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(head, tail): tail domains want more than their pool has left this stage."""
    head = sorted(d for d, q in quotas.items() if q <= remaining.get(d, 0))
    tail = sorted(d for d, q in quotas.items() if q > remaining.get(d, 0))
    return head, tail


def stage_budget(total_budget: float, spent: float, stage: int, num_stages: int) -> float:
    """An equal share of what is left: unspent budget (drops, unavailable outputs) rolls forward.

    Whole calls split into whole shares; token and usd budgets split exactly (flooring $0.05 over
    three stages would plan nothing before the last one).
    """
    left = max(total_budget - spent, 0)
    if stage >= num_stages - 1:
        return left
    if float(total_budget).is_integer() and float(spent).is_integer():
        return float(int(left) // (num_stages - stage))
    return left / (num_stages - stage)
