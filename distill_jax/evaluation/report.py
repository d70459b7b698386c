"""Evaluation reports: report.json for machines, report.md and a console table for people."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from distill_jax import atomic
from distill_jax.evaluation import metrics

REPORT_METRICS = ("answer_accuracy", "answer_f1", "exact_match", "token_accuracy", "loss")


def build_report(
    per_domain: Mapping[str, Mapping[str, float]],
    train_domain_counts: Mapping[str, int],
    head_fraction: float,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """(report dict, console table). Head/tail comes from the training distribution, not the eval one."""
    head, tail = metrics.split_head_tail(train_domain_counts, head_fraction)
    # Domains seen only at eval time count as tail: the student had no head-sized data for them.
    tail = tail + sorted(d for d in per_domain if d not in head and d not in tail)
    counts = {d: int(train_domain_counts.get(d, 0)) for d in set(per_domain) | set(train_domain_counts)}
    aggregates = metrics.aggregate(per_domain, head, tail)
    shown = [m for m in REPORT_METRICS if any(m in v for v in per_domain.values())]
    table = metrics.format_domain_table(per_domain, aggregates, counts, head, shown)
    report = {
        "per_domain": per_domain,
        "aggregates": aggregates,
        "head": head,
        "tail": tail,
        "train_domain_counts": counts,
        **(dict(extra) if extra else {}),
    }
    return report, table


def write_report(output_dir: str, report: Mapping[str, Any], table: str, title: str = "Evaluation") -> dict[str, str]:
    """Writes report.json and report.md atomically; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, "report.json"), "md": os.path.join(output_dir, "report.md")}
    atomic.write_text(paths["json"], json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    atomic.write_text(
        paths["md"],
        f"# {title}\n\nHead domains: {', '.join(report['head']) or '-'}\n\n"
        f"Tail domains: {', '.join(report['tail']) or '-'}\n\n```\n{table}\n```\n",
    )
    return paths
