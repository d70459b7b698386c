"""`distill --dry_run`: the planned teacher calls, tokens and cost per stage and method, spending nothing.

Runs the scheduler's own planning (scheduler.MethodRun._plan / _requests) in a scratch directory
with an in-memory ledger that is "settled" at each request's estimate (spend.Budget.estimate: the
prompt rendered from the configured templates, bytes/4 tokens, plus the completion estimate).
Head selection is random here: IFD needs a trained student, and it changes which examples are
bought, not how many. Nothing is sent, nothing is written to the workdir; no API key is needed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import ml_collections

from distill_jax.config import ConfigError
from distill_jax.distill import balancing, scheduler
from distill_jax.distill.pool import load_examples, split_holdout
from distill_jax.distill.setting import Setting, parse_list
from distill_jax.teachers import spend
from distill_jax.teachers.openai import render_prompt
from distill_jax.teachers.pool import normalize_input


@dataclasses.dataclass
class _Prompts:
    """Stands in for the teacher: renders prompts only (no key, no endpoint)."""

    templates: dict[str, str]
    model: str
    max_tokens: int
    name: str = "dry-run"

    def prompt(self, request) -> str:
        return render_prompt(self.templates, request) if self.templates else ""


def plan(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """{method: [{stage, calls, by_kind, input_tokens, output_tokens, cost, usd}]} plus the budget."""
    t, d = config.teacher, config.distill
    price = spend.price_for(d.budget_unit, t.model, t.prices)
    templates = (
        dict(annotate=t.annotate_prompt, synthesize=t.synthesize_prompt, paraphrase=t.paraphrase_prompt)
        if t.kind == "openai"
        else {}
    )
    teacher = _Prompts(templates, t.model, int(t.max_tokens))
    fields = dict(d.pool_fields)
    split = parse_list(d.pool)
    if not split:
        raise ConfigError("no pool files: set --config.distill.pool")
    pool = load_examples(split, fields, default_domain=config.prepare.default_domain)
    held = load_examples(parse_list(d.eval_data), fields) if d.eval_data else None
    if held is None:
        pool, held = split_holdout(pool, d.eval_holdout_per_domain, config.seed)
    known = {normalize_input(e.input) for g in (pool, held) for v in g.values() for e in v}
    out: dict[str, Any] = {"budget": float(d.budget), "unit": d.budget_unit, "methods": {}}
    with tempfile.TemporaryDirectory(prefix="distill_dry_run_") as scratch:
        setting = Setting(config, scratch, pool, os.path.join(scratch, "eval"), known, teacher)
        for name in parse_list(d.methods):
            run = scheduler.MethodRun(setting, balancing.get_method(name))
            budget = spend.Budget(run.ledger, max_tokens=int(t.max_tokens), price=price)
            stages = []
            for stage in range(run.num_stages):
                budget.stage = stage
                p = run._plan(stage)
                run.state["stages"].append(p)
                requests, _ = run._requests(p)
                row = dict(stage=stage, calls=0, by_kind={}, input_tokens=0, output_tokens=0, cost=0.0, usd=0.0)
                for request in requests:
                    prompt = teacher.prompt(request)
                    tin = len(prompt.encode()) // 4 + spend.MESSAGE_OVERHEAD_TOKENS
                    tout = budget.completion_estimate()
                    cost = budget.cost(tin, tout, key=request.key)
                    if not run.ledger.open(
                        request.key,
                        0,
                        kind=request.kind,
                        domain=request.domain,
                        stage=stage,
                        estimate=cost,
                        bound=cost,
                        wait=False,
                    ):
                        break
                    run.ledger.settle(request.key, 0, "billed", cost, input_tokens=tin, output_tokens=tout)
                    row["calls"] += 1
                    row["by_kind"][request.kind] = row["by_kind"].get(request.kind, 0) + 1
                    row["input_tokens"] += tin
                    row["output_tokens"] += tout
                    row["cost"] += cost
                    row["usd"] += price.usd(tin, tout) if price else 0.0
                stages.append(row)
            run.close()
            out["methods"][name] = stages
    return out


def format_plan(result: dict[str, Any]) -> str:
    unit = result["unit"]
    lines = [f"Dry run: budget {result['budget']:g} {unit}; nothing was sent or charged.", ""]
    lines.append(f"| method | stage | calls | annotate | synthesize | input tokens | output tokens | {unit} | usd |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name, stages in result["methods"].items():
        for s in stages:
            lines.append(
                f"| {name} | {s['stage']} | {s['calls']} | {s['by_kind'].get('annotate', 0)} | "
                f"{s['by_kind'].get('synthesize', 0)} | {s['input_tokens']} | {s['output_tokens']} | "
                f"{s['cost']:.6g} | {s['usd']:.4f} |"
            )
        total = {k: sum(s[k] for s in stages) for k in ("calls", "input_tokens", "output_tokens", "cost", "usd")}
        lines.append(
            f"| {name} | all | {total['calls']} | | | {total['input_tokens']} | {total['output_tokens']} | "
            f"{total['cost']:.6g} | {total['usd']:.4f} |"
        )
    lines.append("")
    lines.append(
        "Tokens are estimates (prompt bytes / 4; completions at teacher.max_tokens until a run observes them)."
    )
    return "\n".join(lines)
