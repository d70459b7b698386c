"""What a distillation run bought and what it got: per stage, per domain, per method.

Reads the scheduler's state and each stage's purchased/dropped files; writes WORKDIR/report.json
(machine-readable), WORKDIR/report.md (tables) and WORKDIR/distill_curves.png (head/tail accuracy
against budget spent, one line per method). Head and tail here are the pool's natural groups
(`eval.head_fraction` of the pool in the largest domains), fixed for the run, so methods compare on
the same domains; the scheduler's per-stage head/tail roles are reported separately.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from distill_jax import atomic, metrics, storage
from distill_jax.distill import balancing
from distill_jax.evaluation import classification

SCORE = "answer_accuracy"  # The headline metric: the extracted final answer matches the gold one.
GROUPS = ("macro", "micro", "head", "tail")


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    return atomic.read_jsonl(path) if storage.exists(path) else []


def _save_png(fig: Any, path: str) -> None:
    """The figure as one PNG written whole (atomic.write_bytes: rename locally, one PUT on object storage)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic.write_bytes(path, buffer.getvalue())


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
    for row in _read_jsonl(storage.join(stage_dir, "purchased.jsonl")):
        key = "annotated" if row["meta"]["kind"] == "annotate" else "synthesized"
        out[row["domain"]][key] += 1
    for row in _read_jsonl(storage.join(stage_dir, "dropped.jsonl")):
        dropped = out[row["domain"]]["dropped"]
        dropped[row["reason"]] = dropped.get(row["reason"], 0) + 1
    return out


def method_report(
    method_dir: str,
    state: Mapping[str, Any],
    head: Sequence[str],
    tail: Sequence[str],
    classification: bool = False,
) -> dict[str, Any]:
    stages = []
    for plan in state["stages"]:
        entry: dict[str, Any] = dict(
            stage=plan["stage"],
            selection=plan["selection"],
            budget=plan["budget"],
            spent_after=plan.get("spent_after"),
            domains=stage_counts(storage.join(method_dir, f"stage_{plan['stage']}"), plan),
        )
        evaluation = plan.get("eval") or {}
        if evaluation.get("per_domain"):
            entry["step"] = evaluation["step"]
            entry["per_domain"] = evaluation["per_domain"]
            entry["summary"] = metrics.aggregate(evaluation["per_domain"], head, tail)
        stages.append(entry)
    out = dict(method=state["method"], phase=state["phase"], ledger=state.get("ledger"), stages=stages)
    if classification and stages:
        records = _read_jsonl(storage.join(method_dir, f"stage_{stages[-1]['stage']}", "eval_predictions.jsonl"))
        if records:
            out["label_f1"] = label_f1(records)
    return out


def label_f1(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Macro-F1 over the reference labels and micro-F1 (= accuracy for one label per row), the paper's
    metrics for its text-classification sets; answers compare after SQuAD normalisation."""
    predictions = [metrics.normalize_answer(r["answer"]) for r in records]
    references = [metrics.normalize_answer(r["reference_answer"]) for r in records]
    micro = sum(p == r for p, r in zip(predictions, references)) / len(records)
    return dict(macro_f1=classification.macro_f1(predictions, references), micro_f1=micro)


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
        "acc: answer accuracy, the share of held-out questions whose greedy-decoded final answer equals the "
        "reference answer (the answer is extracted after 'answer is' when the output has a rationale). "
        "head/tail/macro average the domains' accuracies, micro averages over questions. loss: mean "
        "cross-entropy per token of the reference output on the held-out rows (lower is better)."
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
    if any(m.get("label_f1") for m in report["methods"].values()):
        lines += ["", "Classification (labels as domains): macro-F1 over labels / micro-F1 of the final students: "]
        lines[-1] += "; ".join(
            f"{name} {m['label_f1']['macro_f1']:.3f} / {m['label_f1']['micro_f1']:.3f}"
            for name, m in report["methods"].items()
            if m.get("label_f1")
        )
    notes = disagreement_notes(report)
    if notes:
        lines += ["", "## Loss and accuracy disagree", "", *[f"- {n}" for n in notes]]
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
            "| stage | selection | spent | IFD-selected | annotated | synthesized | dropped | tail domains | macro | head | tail |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for s in m["stages"]:
            doms = s["domains"].values()
            dropped = sum(sum(d["dropped"].values()) for d in doms)
            tails = [d for d, v in s["domains"].items() if v["role"] == "tail"]
            summary = s.get("summary", {})
            scores = [summary.get(g, {}).get(SCORE) for g in ("macro", "head", "tail")]
            lines.append(
                f"| {s['stage']} | {s['selection']} | {_fmt(s['spent_after'])} | "
                f"{sum(d['ifd_selected'] for d in doms)} | {sum(d['annotated'] for d in doms)} | {sum(d['synthesized'] for d in doms)} | {dropped} | "
                f"{', '.join(tails) or '-'} | " + " | ".join(_fmt(v) for v in scores) + " |"
            )
    return "\n".join(lines) + "\n"


def _synthesized(method: Mapping[str, Any]) -> int:
    return sum(d["synthesized"] for s in method["stages"] for d in s["domains"].values())


def terminal_table(report: Mapping[str, Any]) -> str:
    """The comparison a person reads first: per-domain answer accuracy per method, then the groups."""
    names = list(report["methods"])
    finals = {name: _final(m) for name, m in report["methods"].items()}
    width = max([len(d) for d in report["pool_sizes"]] + [26])
    head = f"{'domain':<{width}} {'group':<5} {'pool':>5}  " + "  ".join(f"{n:>9}" for n in names)
    lines = [
        f"Answer accuracy per domain at the same teacher budget ({_fmt(report['budget'])} {report['unit']}, "
        f"{report['stages']} stages): the share of held-out questions whose decoded answer is exactly right.",
        "",
        head,
        "-" * len(head),
    ]

    def cells(get: Any) -> str:
        return "  ".join(f"{_fmt(get(finals[n], report['methods'][n])):>9}" for n in names)

    for dom in report["head"] + report["tail"]:
        group = "head" if dom in report["head"] else "tail"
        row = cells(lambda f, m, dom=dom: f["per_domain"].get(dom, {}).get(SCORE) if f else None)
        lines.append(f"{dom:<{width}} {group:<5} {report['pool_sizes'][dom]:>5}  {row}")
    lines.append("-" * len(head))
    labels = {"head": "head (mean of domains)", "tail": "tail (mean of domains)", "macro": "macro (all domains)"}
    labels["micro"] = "micro (all questions)"
    for group in ("head", "tail", "macro", "micro"):
        row = cells(lambda f, m, g=group: f["summary"][g].get(SCORE) if f else None)
        lines.append(f"{labels[group]:<{width + 13}} {row}")
    if any(m.get("label_f1") for m in report["methods"].values()):
        row = cells(lambda f, m: (m.get("label_f1") or {}).get("macro_f1"))
        lines.append(f"{'label macro-F1':<{width + 13}} {row}")
    row = cells(lambda f, m: f["summary"]["macro"].get("loss") if f else None)
    lines.append(f"{'loss per answer token':<{width + 13}} {row}")
    row = cells(lambda f, m: (m.get("ledger") or {}).get("spent"))
    lines.append(f"{'teacher budget spent':<{width + 13}} {row}")
    row = cells(lambda f, m: _synthesized(m))
    lines.append(f"{'tail examples synthesized':<{width + 13}} {row}")
    lines.append("")
    for name in names:
        if name in balancing.METHODS:
            lines.append(f"  {name}: {_describe(balancing.METHODS[name])}")
    lines += ["", *disagreement_notes(report)] if disagreement_notes(report) else []
    return "\n".join(lines) + "\n"


_LABELS = {"random": "Random FT", "naive": "BalDistill-N", "adaptive": "BalDistill-A", "balanced": "BalanceFT"}
_LABELS["active"] = "ActiveFT"
_POLICIES = {
    "random": "a uniform sample of the pool",
    "naive": "equal quotas per domain",
    "adaptive": "quotas moving from the natural mix to equal",
}


def _describe(method: balancing.Method) -> str:
    selection = "IFD-selected head examples" if method.selection == "ifd" else "random head examples"
    synthesis = ", teacher-synthesized tail examples" if method.synthesize else ""
    label = _LABELS.get(method.name, method.name)
    return f"{label}: {_POLICIES[method.policy]} each stage, {selection}{synthesis}"


def disagreement_notes(report: Mapping[str, Any]) -> list[str]:
    """Where loss and accuracy on the *same* decoded rows tell different stories, say so.

    Greedy decoding reproduces every row the model gets right teacher-forced (the decoder computes
    what the loss scores: evaluation.consistency), so exact answers below `forced_exact` would mean a
    decoding fault; a low loss with few rows right even teacher-forced means the loss comes from easy
    continuation tokens (after the first characters of a label the rest is nearly free).
    """
    notes = []
    for name, m in report["methods"].items():
        final = _final(m)
        if not final:
            continue
        for dom, v in final["per_domain"].items():
            forced, accuracy, loss = v.get("forced_exact"), v.get("exact_match"), v.get("loss_on_decoded")
            if forced is None or accuracy is None:
                continue
            if accuracy + 1e-9 < forced:
                notes.append(
                    f"NOTE {name}/{dom}: greedy decoding gets {accuracy:.2f} of rows exactly right but "
                    f"{forced:.2f} are right teacher-forced: decoding disagrees with scoring (run eval --check_decoding)."
                )
            elif loss is not None and loss < 0.5 and accuracy < 0.5:
                notes.append(
                    f"NOTE {name}/{dom}: loss {loss:.3f}/token on the decoded rows yet only {accuracy:.2f} decoded "
                    f"exactly ({forced:.2f} right even teacher-forced): the loss is carried by easy tokens."
                )
    return notes


def plot_domain_bars(report: Mapping[str, Any], path: str) -> None:
    """Final per-domain answer accuracy, one bar per method; head domains on a grey, tail on an orange band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = report["head"] + report["tail"]
    names = list(report["methods"])
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(domains) + 2), 4))
    ax.axvspan(-0.5, len(report["head"]) - 0.5, color="0.9", label="head domains")
    ax.axvspan(len(report["head"]) - 0.5, len(domains) - 0.5, color="#fde4c8", label="tail domains")
    for i, name in enumerate(names):
        final = _final(report["methods"][name])
        values = [(final["per_domain"].get(d, {}).get(SCORE) or 0.0) if final else 0.0 for d in domains]
        ax.bar([x + (i - (len(names) - 1) / 2) * width for x in range(len(domains))], values, width, label=name)
    ax.set_xticks(range(len(domains)))
    ax.set_xticklabels([f"{d}\n({report['pool_sizes'][d]})" for d in domains], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(domains) - 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("answer accuracy (held-out)")
    ax.set_title(f"Per-domain accuracy at {_fmt(report['budget'])} {report['unit']} (pool size in brackets)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


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
        ax.set_title(f"{group} domains (a point per stage)")
        ax.set_xlabel(f"teacher budget spent ({report['unit']})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(SCORE.replace("_", " "))
    axes[0].legend()
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


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
        methods={
            name: method_report(storage.join(workdir, name), state, head, tail, bool(config.distill.label_set))
            for name, state in states.items()
        },
    )
    atomic.write_text(storage.join(workdir, "report.json"), json.dumps(report, indent=1, sort_keys=True) + "\n")
    atomic.write_text(storage.join(workdir, "report.md"), markdown(report))
    plot_curves(report, storage.join(workdir, "distill_curves.png"))
    plot_domain_bars(report, storage.join(workdir, "domain_accuracy.png"))
    return report
