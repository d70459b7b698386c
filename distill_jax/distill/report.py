"""What a distillation run bought and what it got: per stage, per domain, per method.

Reads the scheduler's state and each stage's purchased/dropped files; writes WORKDIR/report.json
(machine-readable), WORKDIR/report.md (tables) and WORKDIR/distill_curves.png (head/tail accuracy
against budget spent, one line per method). Head and tail here are the pool's natural groups
(`eval.head_fraction` of the pool in the largest domains), fixed for the run, so methods compare on
the same domains; the scheduler's per-stage head/tail roles are reported separately.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from distill_jax import atomic
from distill_jax.evaluation import metrics

SCORE = "answer_accuracy"  # The headline metric: the extracted final answer matches the gold one.
GROUPS = ("macro", "micro", "head", "tail")


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stage_counts(stage_dir: str, plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per domain: quota, role, annotated (kept), synthesized (kept), IFD-selected, dropped by reason."""
    out: dict[str, dict[str, Any]] = {}
    for dom, quota in plan["quotas"].items():
        out[dom] = dict(
            quota=int(quota),
            role="tail" if dom in plan["tail"] else "head",
            annotated=0,
            synthesized=0,
            ifd_selected=len(plan["annotate"].get(dom, []))
            if plan["selection"] == "ifd" and dom in plan["head"]
            else 0,
            dropped={},
        )
    for row in _read_jsonl(os.path.join(stage_dir, "purchased.jsonl")):
        key = "annotated" if row["meta"]["kind"] == "annotate" else "synthesized"
        out[row["domain"]][key] += 1
    for row in _read_jsonl(os.path.join(stage_dir, "dropped.jsonl")):
        dropped = out[row["domain"]]["dropped"]
        dropped[row["reason"]] = dropped.get(row["reason"], 0) + 1
    return out


def method_report(
    method_dir: str, state: Mapping[str, Any], head: Sequence[str], tail: Sequence[str]
) -> dict[str, Any]:
    stages = []
    for plan in state["stages"]:
        entry: dict[str, Any] = dict(
            stage=plan["stage"],
            selection=plan["selection"],
            budget=plan["budget"],
            spent_after=plan.get("spent_after"),
            domains=stage_counts(os.path.join(method_dir, f"stage_{plan['stage']}"), plan),
        )
        evaluation = plan.get("eval") or {}
        if evaluation.get("per_domain"):
            entry["step"] = evaluation["step"]
            entry["per_domain"] = evaluation["per_domain"]
            entry["summary"] = metrics.aggregate(evaluation["per_domain"], head, tail)
        stages.append(entry)
    return dict(method=state["method"], phase=state["phase"], ledger=state.get("ledger"), stages=stages)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) > 1 else f"{value:.3f}"
    return str(value)


def _final(method: Mapping[str, Any]) -> Mapping[str, Any] | None:
    evaluated = [s for s in method["stages"] if "summary" in s]
    return evaluated[-1] if evaluated else None


def markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Balanced distillation report", ""]
    lines.append(f"Budget {report['budget']} {report['unit']} over {report['stages']} stages.")
    lines.append(f"Head domains (pool): {', '.join(report['head'])}; tail: {', '.join(report['tail'])}.")
    lines += ["", "## Methods compared (final stage)", ""]
    lines.append(
        "Answer accuracy decodes the student's answer; loss is per token of the reference rationale + answer "
        "(lower is better; the finer signal while a small student still gets few answers whole)."
    )
    lines.append("")
    columns = [(g, SCORE) for g in GROUPS] + [(g, "loss") for g in ("macro", "head", "tail")]
    lines.append("| method | spent | " + " | ".join(f"{g} {'acc' if m == SCORE else m}" for g, m in columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    for name, m in report["methods"].items():
        final = _final(m)
        values = [final["summary"][g].get(metric) if final else None for g, metric in columns]
        spent = m["ledger"]["spent"] if m.get("ledger") else None
        lines.append(f"| {name} | {_fmt(spent)} | " + " | ".join(_fmt(v) for v in values) + " |")
    domains = report["head"] + report["tail"]
    lines += ["", f"## Per domain ({SCORE}, final stage)", ""]
    lines.append("| domain | group | pool | " + " | ".join(report["methods"]) + " |")
    lines.append("|---|---|---|" + "---|" * len(report["methods"]))
    for dom in domains:
        cells = []
        for m in report["methods"].values():
            final = _final(m)
            cells.append(_fmt(final["per_domain"].get(dom, {}).get(SCORE) if final else None))
        group = "head" if dom in report["head"] else "tail"
        lines.append(f"| {dom} | {group} | {report['pool_sizes'][dom]} | " + " | ".join(cells) + " |")
    for name, m in report["methods"].items():
        lines += ["", f"## {name}: stages", ""]
        lines.append(
            "| stage | selection | spent | annotated | synthesized | dropped | tail domains | macro | head | tail |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for s in m["stages"]:
            doms = s["domains"].values()
            dropped = sum(sum(d["dropped"].values()) for d in doms)
            tails = [d for d, v in s["domains"].items() if v["role"] == "tail"]
            summary = s.get("summary", {})
            scores = [summary.get(g, {}).get(SCORE) for g in ("macro", "head", "tail")]
            lines.append(
                f"| {s['stage']} | {s['selection']} | {_fmt(s['spent_after'])} | "
                f"{sum(d['annotated'] for d in doms)} | {sum(d['synthesized'] for d in doms)} | {dropped} | "
                f"{', '.join(tails) or '-'} | " + " | ".join(_fmt(v) for v in scores) + " |"
            )
    return "\n".join(lines) + "\n"


def plot_curves(report: Mapping[str, Any], path: str) -> None:
    """Head and tail accuracy against budget spent, one line per method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, group in zip(axes, ("head", "tail")):
        for name, m in report["methods"].items():
            points = [(s["spent_after"], s["summary"][group].get(SCORE)) for s in m["stages"] if "summary" in s]
            points = [(x, y) for x, y in points if x is not None and y is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_title(f"{group} domains")
        ax.set_xlabel(f"teacher budget spent ({report['unit']})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(SCORE.replace("_", " "))
    axes[0].legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(
    workdir: str,
    states: Mapping[str, Mapping[str, Any]],
    pool_sizes: Mapping[str, int],
    config: Any,
) -> dict[str, Any]:
    head, tail = metrics.split_head_tail(pool_sizes, config.eval.head_fraction)
    report = dict(
        budget=config.distill.budget,
        unit=config.distill.budget_unit,
        stages=config.distill.stages,
        pool_sizes=dict(pool_sizes),
        head=head,
        tail=tail,
        methods={name: method_report(os.path.join(workdir, name), state, head, tail) for name, state in states.items()},
    )
    atomic.write_text(os.path.join(workdir, "report.json"), json.dumps(report, indent=1, sort_keys=True) + "\n")
    atomic.write_text(os.path.join(workdir, "report.md"), markdown(report))
    plot_curves(report, os.path.join(workdir, "distill_curves.png"))
    return report
