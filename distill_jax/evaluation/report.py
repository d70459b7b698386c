"""Evaluation reports: report.json for machines, report.md and a console table for people."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from distill_jax import atomic, metrics, storage

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
    storage.makedirs(output_dir)
    paths = {"json": storage.join(output_dir, "report.json"), "md": storage.join(output_dir, "report.md")}
    atomic.write_text(paths["json"], json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    atomic.write_text(
        paths["md"],
        f"# {title}\n\nHead domains: {', '.join(report['head']) or '-'}\n\n"
        f"Tail domains: {', '.join(report['tail']) or '-'}\n\n```\n{table}\n```\n",
    )
    return paths


# ------------------------------------------------------------------ several prediction sets side by side

# Columns of comparison tables, in this order, when any set has them.
COMPARE_METRICS = (
    "answer_accuracy",
    "answer_f1",
    "exact_match",
    "label_macro_f1",
    "bleu",
    "chrf",
    "rouge1",
    "rouge2",
    "rougeL",
    "semantic_similarity",
    "lexical_diversity",
    "syntactic_diversity",
    "distinct_1",
    "distinct_2",
    "self_bleu",
    "ibleu",
)
GROUPS = ("head", "tail", "macro", "micro")


def head_and_tail(
    domain_counts: Mapping[str, int], head_fraction: float, evaluated: Sequence[str], head_domains: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Head/tail from explicit ``head_domains`` or by training size; evaluated domains without training data are tail."""
    if head_domains:
        head = list(head_domains)
    else:
        head, _ = metrics.split_head_tail(domain_counts, head_fraction)
    tail = sorted((set(domain_counts) | set(evaluated)) - set(head), key=lambda d: (-domain_counts.get(d, 0), d))
    return head, tail


def _ratios(sets: Mapping[str, Mapping[str, Any]], teacher: str) -> dict[str, dict[str, Any]]:
    """Each other set's aggregates divided by the teacher's (where the teacher's value is non-zero), and params."""
    reference = sets[teacher]
    out: dict[str, dict[str, Any]] = {}
    for name, s in sets.items():
        if name == teacher:
            continue
        ratio: dict[str, Any] = {
            group: {
                m: v / reference["aggregates"][group][m]
                for m, v in s["aggregates"].get(group, {}).items()
                if m != "count" and reference["aggregates"].get(group, {}).get(m)
            }
            for group in GROUPS
        }
        for key in ("params", "examples_per_s"):
            if s.get(key) and reference.get(key):
                ratio[key] = s[key] / reference[key]
        out[name] = ratio
    return out


def comparison_table(report: Mapping[str, Any]) -> str:
    """One screen: a row per metric; per set a block of head/tail/macro/micro, then each set / teacher the same way.

    Values print with 4 decimals, ratios with 3, "-" where a set has no value; the last row holds
    parameter counts (and their ratio).
    """
    sets, teacher = report["sets"], report.get("teacher")
    names = list(report["order"])
    shown = [m for m in COMPARE_METRICS if any(m in v for s in sets.values() for v in s["per_domain"].values())]
    blocks = [(n, sets[n]["aggregates"], "{:.4f}") for n in names]
    blocks += [(f"{n}/{teacher}", report["ratios"][n], "{:.3f}") for n in names if teacher and n != teacher]

    def cell(values: Mapping[str, Any], group: str, metric: str, fmt: str) -> str:
        value = values.get(group, {}).get(metric)
        return "-" if value is None else fmt.format(value)

    rows = [[m, *(cell(v, g, m, fmt) for _, v, fmt in blocks for g in GROUPS)] for m in shown]
    params = []
    for name, values, _ in blocks:
        count = sets[name].get("params") if name in sets else values.get("params")
        text = "-" if not count else (f"{count / 1e6:.2f}M" if name in sets else f"{count:.3g}")
        params += [text, "", "", ""]
    rows.append(["params", *params])
    groups_row = ["metric", *(g for _ in blocks for g in GROUPS)]
    widths = [max(len(r[i]) for r in [groups_row, *rows]) for i in range(len(groups_row))]
    # Widen each block's last column so the block's name fits above it.
    for b, (name, _, _) in enumerate(blocks):
        cols = range(1 + 4 * b, 5 + 4 * b)
        shortfall = len(name) - (sum(widths[c] for c in cols) + 2 * 3)
        if shortfall > 0:
            widths[cols[-1]] += shortfall

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    titles = [" " * widths[0]]
    for b, (name, _, _) in enumerate(blocks):
        titles.append(name.center(sum(widths[1 + 4 * b : 5 + 4 * b]) + 2 * 3))
    header = "  ".join(titles).rstrip()
    return "\n".join([header, line(groups_row), "-" * len(line(groups_row)), *(line(r) for r in rows)])


def build_comparison_report(
    sets: Mapping[str, Mapping[str, Any]],
    train_domain_counts: Mapping[str, int],
    head: Sequence[str],
    tail: Sequence[str],
    teacher: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """(report, console text) for prediction sets ``{name: {"per_domain", ...}}`` (insertion order kept).

    Each set gains its head/tail/macro/micro aggregates; with a ``teacher`` (one of the names) the
    others get ratios to it.
    """
    if teacher is not None and teacher not in sets:
        raise ValueError(f"teacher {teacher!r} is not one of the prediction sets {list(sets)}")
    full = {name: {**s, "aggregates": metrics.aggregate(s["per_domain"], head, tail)} for name, s in sets.items()}
    report: dict[str, Any] = {
        "sets": full,
        "order": list(sets),
        "teacher": teacher,
        "ratios": _ratios(full, teacher) if teacher else {},
        "head": list(head),
        "tail": list(tail),
        "train_domain_counts": dict(train_domain_counts),
        **(dict(extra) if extra else {}),
    }
    table = comparison_table(report)
    per_set = paraphrase_table(report)
    return report, f"{table}\n\n{per_set}" if per_set else table


# One row per set in the paraphrase table (micro averages): fidelity, then diversity, then both.
PARAPHRASE_COLUMNS = (
    ("sem.sim", "semantic_similarity"),
    ("lex.div", "lexical_diversity"),
    ("syn.div", "syntactic_diversity"),
    ("self-BLEU", "self_bleu"),
    ("distinct-2", "distinct_2"),
    ("iBLEU", "ibleu"),
)


def paraphrase_table(report: Mapping[str, Any]) -> str:
    """A row per set (e.g. a student under each decoding preset, and the teacher) of the paraphrase measures.

    Micro averages over all evaluated inputs; then parameters, examples/s, and each set's semantic
    similarity, iBLEU, size and speed relative to the teacher. Empty when no set has paraphrase measures.
    """
    sets, teacher = report["sets"], report.get("teacher")
    columns = [
        (h, m) for h, m in PARAPHRASE_COLUMNS if any(m in s["aggregates"].get("micro", {}) for s in sets.values())
    ]
    if not columns:
        return ""
    header = ["set", *(h for h, _ in columns), "params", "examples/s"]
    if teacher:
        header += [f"{h}/{teacher}" for h in ("sem.sim", "iBLEU", "params", "speed")]
    rows = [header]
    for name in report["order"]:
        s, micro = sets[name], sets[name]["aggregates"].get("micro", {})
        row = [name, *("-" if m not in micro else f"{micro[m]:.3f}" for _, m in columns)]
        row += [f"{s['params'] / 1e6:.2f}M" if s.get("params") else "-"]
        row += [f"{s['examples_per_s']:.1f}" if s.get("examples_per_s") else "-"]
        if teacher:
            ratio = report["ratios"].get(name, {})
            micro_ratio = ratio.get("micro", {})
            values = (micro_ratio.get("semantic_similarity"), micro_ratio.get("ibleu"))
            values += (ratio.get("params"), ratio.get("examples_per_s"))
            row += ["-" if name == teacher or v is None else f"{v:.3g}" for v in values]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _domain_table(report: Mapping[str, Any], name: str) -> str:
    s = report["sets"][name]
    shown = [m for m in COMPARE_METRICS if any(m in v for v in s["per_domain"].values())]
    counts = {
        d: report["train_domain_counts"].get(d, 0) for d in set(s["per_domain"]) | set(report["train_domain_counts"])
    }
    return metrics.format_domain_table(s["per_domain"], s["aggregates"], counts, report["head"], shown)


def write_comparison_report(output_dir: str, report: Mapping[str, Any], table: str, title: str) -> dict[str, Any]:
    """report.json, report.md (comparison, then one per-domain table per set) and plots/*.png; returns the paths."""
    from distill_jax.evaluation import plots

    os.makedirs(output_dir, exist_ok=True)
    plot_paths = plots.write_plots(report, os.path.join(output_dir, "plots"))
    paths: dict[str, Any] = {
        "json": os.path.join(output_dir, "report.json"),
        "md": os.path.join(output_dir, "report.md"),
        "plots": plot_paths,
    }
    atomic.write_text(paths["json"], json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    sources = "\n".join(
        f"| {n} | {s.get('source', '-')} | {s.get('step', '-')} | {s.get('params') or '-'} | {s.get('missing', 0)} |"
        for n, s in report["sets"].items()
    )
    sections = [
        f"# {title}\n",
        f"Head domains: {', '.join(report['head']) or '-'}\n\nTail domains: {', '.join(report['tail']) or '-'}\n",
        "| set | predictions | step | params | missing |\n|---|---|---|---|---|\n" + sources + "\n",
        f"## Side by side\n\n```\n{table}\n```\n",
        *(f"## {name}, per domain\n\n```\n{_domain_table(report, name)}\n```\n" for name in report["order"]),
        *(f"![{os.path.basename(p)}](plots/{os.path.basename(p)})\n" for p in plot_paths),
    ]
    notes = report.get("notes")
    if notes:
        sections.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    atomic.write_text(paths["md"], "\n".join(sections))
    return paths
