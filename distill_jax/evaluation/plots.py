"""PNG plots for evaluation reports (matplotlib's object API on the Agg canvas: no display, no global state).

Each plot is a function ``(report, path) -> bool`` that draws from a report dict and returns
False (writing nothing) when the report lacks what it needs; :data:`PLOTS` lists them with their
file names and :func:`write_plots` draws every one that applies. A new plot is one function and
one line in :data:`PLOTS`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill_jax import storage

HEAD_COLOR, TAIL_COLOR = "#1f77b4", "#ff7f0e"
HATCHES = ("", "//", "..", "xx", "\\\\", "oo")  # one per prediction set, so sets differ beyond colour
# The per-domain plot shows the first of these that the report has.
ACCURACY_METRICS = ("answer_accuracy", "exact_match", "label_macro_f1", "bleu", "semantic_similarity")
GROUPS = ("head", "tail", "macro", "micro")

PlotFn = Callable[[Mapping[str, Any], str], bool]


def _sets(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{set name: {"per_domain", "aggregates"}}: a comparison report's sets, or a single-model report as one set."""
    if "sets" in report:
        return {name: report["sets"][name] for name in report.get("order", report["sets"])}
    return {"student": {"per_domain": report["per_domain"], "aggregates": report["aggregates"]}}


def _metric(sets: Mapping[str, Mapping[str, Any]]) -> str | None:
    present = {m for s in sets.values() for values in s["per_domain"].values() for m in values}
    return next((m for m in ACCURACY_METRICS if m in present), None)


def _y_range(ax: Any, values: Sequence[float]) -> None:
    """From 0 (or below, for negative values), so an all-zero plot does not centre on 0."""
    finite = [v for v in values if np.isfinite(v)]
    low, high = min(finite, default=0.0), max(finite, default=0.0)
    ax.set_ylim(min(low, 0.0) * 1.1, high * 1.1 if high > 0 else 1.0)


def _save(fig: Any, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)  # a reader never sees half a PNG


def domain_bars(report: Mapping[str, Any], path: str) -> bool:
    """Per-domain accuracy, domains by training size (largest first), bars coloured head/tail, one bar per set."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sets = _sets(report)
    metric = _metric(sets)
    if metric is None:
        return False
    counts = report.get("train_domain_counts", {})
    domains = sorted({d for s in sets.values() for d in s["per_domain"]}, key=lambda d: (-counts.get(d, 0), d))
    head = set(report.get("head", ()))
    colors = [HEAD_COLOR if d in head else TAIL_COLOR for d in domains]
    width = 0.8 / len(sets)
    fig = Figure(figsize=(max(6.0, 0.6 * len(domains) * max(len(sets), 1.5)), 4.2))
    ax = fig.add_subplot()
    x = np.arange(len(domains))
    handles = [Patch(color=HEAD_COLOR, label="head"), Patch(color=TAIL_COLOR, label="tail")]
    shown: list[float] = []
    for k, (name, s) in enumerate(sets.items()):
        values = [s["per_domain"].get(d, {}).get(metric, np.nan) for d in domains]
        shown += values
        hatch = HATCHES[k % len(HATCHES)]
        ax.bar(x + (k - (len(sets) - 1) / 2) * width, values, width, color=colors, hatch=hatch, edgecolor="black")
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=hatch, label=name))
    _y_range(ax, shown)
    ax.set_xticks(x, domains, rotation=45, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per domain (by training size; head vs tail)")
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def group_bars(report: Mapping[str, Any], path: str) -> bool:
    """Head / tail / macro / micro of the accuracy metric, one bar per set (student vs teacher)."""
    from matplotlib.figure import Figure

    sets = _sets(report)
    metric = _metric(sets)
    if metric is None:
        return False
    width = 0.8 / len(sets)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    x = np.arange(len(GROUPS))
    shown: list[float] = []
    for k, (name, s) in enumerate(sets.items()):
        values = [s["aggregates"].get(g, {}).get(metric, np.nan) for g in GROUPS]
        shown += values
        ax.bar(x + (k - (len(sets) - 1) / 2) * width, values, width, label=name, hatch=HATCHES[k % len(HATCHES)])
    _y_range(ax, shown)
    ax.set_xticks(x, GROUPS)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: " + " vs ".join(sets))
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


# Fidelity (y) against diversity (x) in the frontier plot: the first measure each report has.
FIDELITY_METRICS = ("semantic_similarity", "bleu")
DIVERSITY_METRICS = ("lexical_diversity", "syntactic_diversity")


def fidelity_diversity_frontier(report: Mapping[str, Any], path: str) -> bool:
    """One point per set (a student under each decoding preset, the teacher): micro fidelity vs diversity.

    Points to the upper right are better; the dashed line joins the sets that no other set beats
    on both axes (the Pareto frontier). Needs two or more sets with paraphrase measures.
    """
    from matplotlib.figure import Figure

    sets = _sets(report)
    micro = {name: s["aggregates"].get("micro", {}) for name, s in sets.items()}
    y_metric = next((m for m in FIDELITY_METRICS if all(m in v for v in micro.values())), None)
    x_metric = next((m for m in DIVERSITY_METRICS if all(m in v for v in micro.values())), None)
    if len(sets) < 2 or x_metric is None or y_metric is None:
        return False
    points = {name: (v[x_metric], v[y_metric]) for name, v in micro.items()}
    frontier = sorted(
        (p for name, p in points.items() if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())),
    )
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    teacher = report.get("teacher")
    for name, (x, y) in points.items():
        is_teacher = name == teacher
        ax.scatter([x], [y], marker="*" if is_teacher else "o", s=160 if is_teacher else 50, zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize="small")
    if len(frontier) > 1:
        ax.plot(*zip(*frontier), linestyle="--", color="grey", zorder=2)
    ax.set_xlabel(f"{x_metric} (micro; more = more different from the source)")
    ax.set_ylabel(f"{y_metric} (micro; more = closer in meaning)")
    ax.set_title("Fidelity vs diversity per decoding setting")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


PLOTS: Sequence[tuple[str, PlotFn]] = (
    ("domain_accuracy.png", domain_bars),
    ("groups.png", group_bars),
    ("fidelity_diversity.png", fidelity_diversity_frontier),
)


def write_plots(report: Mapping[str, Any], output_dir: str) -> list[str]:
    """Draws every plot in :data:`PLOTS` that applies to ``report`` into ``output_dir``; returns the paths."""
    if storage.is_remote(output_dir):  # matplotlib writes local files: draw locally, upload each one
        with tempfile.TemporaryDirectory() as local:
            drawn = write_plots(report, local)
            for path in drawn:
                storage.put_bytes(storage.join(output_dir, os.path.basename(path)), Path(path).read_bytes())
            return [storage.join(output_dir, os.path.basename(p)) for p in drawn]
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for name, plot in PLOTS:
        path = os.path.join(output_dir, name)
        if plot(report, path):
            paths.append(path)
    return paths
