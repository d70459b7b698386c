"""A ledger's totals and per-stage counts (what logs, spend lines and report.json show), from its records."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill_jax.teachers.ledger import Attempt, RequestInfo


def summarize(
    attempts: Sequence[Attempt],
    requests: Mapping[str, RequestInfo],
    unit: str,
    budget: float,
    unknown_at_open: int,
) -> dict[str, Any]:
    """Spent, left and attempt outcomes overall; per stage requests, retries by reason, cache hits and tokens."""
    stages: dict[int, dict[str, Any]] = {}

    def stage_row(stage: int) -> dict[str, Any]:
        return stages.setdefault(
            stage,
            dict(
                requests=0,
                attempts=0,
                retries={},
                outcomes={},
                cache_hits=0,
                dedup=0,
                failed=0,
                spent=0.0,
                reserved=0.0,
                input_tokens=0,
                output_tokens=0,
                usd=0.0,
            ),
        )

    by_key: dict[str, list[Attempt]] = collections.defaultdict(list)
    for a in attempts:
        by_key[a.key].append(a)
        row = stage_row(a.stage)
        if a.outcome == "cache":
            continue
        row["attempts"] += 1
        row["outcomes"][a.outcome or "open"] = row["outcomes"].get(a.outcome or "open", 0) + 1
        if a.reason and a.outcome != "unknown":  # A failed attempt: retried, or the last one.
            row["retries"][a.reason] = row["retries"].get(a.reason, 0) + 1
    for a in attempts:
        row = stage_row(a.stage)
        row["spent"] += a.charged
        row["reserved"] += 0.0 if a.outcome else a.bound
        row["input_tokens"] += a.input_tokens
        row["output_tokens"] += a.output_tokens
        row["usd"] += a.usd or 0.0
    for info in requests.values():
        row = stage_row(info.stage)
        row["requests"] += 1
        row["cache_hits"] += info.source == "cache"
        row["dedup"] += info.source == "dedup"
        row["failed"] += info.status == "failed"
    spent = sum(a.charged for a in attempts)
    by_outcome: dict[str, float] = collections.defaultdict(float)
    for key, info in requests.items():
        by_outcome[f"{info.kind}/{info.status or 'in-flight'}"] += sum(a.charged for a in by_key.get(key, []))
    count = collections.Counter(a.outcome or "open" for a in attempts)
    return {
        "unit": unit,
        "budget": budget,
        "spent": spent,
        "left": budget - spent,
        "attempts": {k: count[k] for k in sorted(count)},
        "unknown_at_open": unknown_at_open,
        "spent_by_stage": {str(k): v["spent"] for k, v in sorted(stages.items())},
        "spent_by_outcome": dict(sorted(by_outcome.items())),
        "stages": {str(k): v for k, v in sorted(stages.items())},
    }
