"""The `eval` job over training workdirs: one run, or every method of a `distill`/`demo` directory.

A training workdir (config.json + checkpoints/) is restored and evaluated per domain on prepared
held-out data. A distill directory (its config.json names distill.methods, each method's student
lives in METHOD/train) is evaluated method by method on the directory's own eval_data, with one
comparison table. `check_decoding` also proves, on the decoded rows, that cached greedy decoding
agrees with teacher-forced scoring (evaluation.consistency) and fails when it does not.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
from absl import logging

from distill_jax import storage
from distill_jax.evaluation.consistency import check_decode_consistency
from distill_jax.evaluation.report import build_report, write_report
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import build_evaluator, setup_run

# Cached vs teacher-forced log-probs of the same tokens, float32 (the bound).
CONSISTENCY_ATOL = 1e-4


class DecodingMismatch(RuntimeError):
    """Greedy decoding disagreed with teacher-forced scoring of the same checkpoint."""


def _load_config(workdir: str) -> ml_collections.ConfigDict:
    """A training workdir's or a distill/demo directory's config.json, over today's defaults."""
    if not RunDir(workdir).has_config():
        raise FileNotFoundError(
            f"{RunDir(workdir).config_path} not found: --workdir must be a directory written by "
            "`distill-jax train`, `distill` or `demo`"
        )
    return RunDir(workdir).load_config()


def distill_methods(workdir: str) -> list[str]:
    """The methods of a distill/demo directory whose students exist ([] for a training workdir)."""
    if RunDir(workdir).has_checkpoints():
        return []
    methods = [m.strip() for m in _load_config(workdir).distill.methods.split(",") if m.strip()]
    return [m for m in methods if RunDir(storage.join(workdir, m, "train")).has_config()]


def _check_decoding(run: Any, evaluator: Any, params: Any) -> dict[str, Any]:
    reports = [
        check_decode_consistency(
            run.model, params, jax.device_get(b["encoder_input_tokens"]), max_decode_length=evaluator.max_decode_len
        )
        for b in evaluator.decode_batches
    ]
    summary = dict(
        rows=sum(r.rows for r in reports),
        steps=sum(r.steps for r in reports),
        token_mismatches=sum(r.token_mismatches for r in reports),
        max_logprob_diff=max((r.max_logprob_diff for r in reports), default=0.0),
    )
    summary["ok"] = summary["token_mismatches"] == 0 and summary["max_logprob_diff"] <= CONSISTENCY_ATOL
    return summary


def evaluate_workdir(
    workdir: str,
    data_dir: str | None = None,
    step: int | None = None,
    output_dir: str | None = None,
    decode_examples_per_domain: int | None = None,
    max_examples_per_domain: int | None = None,
    check_decoding: bool = False,
) -> tuple[dict, str]:
    """Restores a checkpoint of `workdir`, evaluates it on `data_dir` and writes the report. Returns (report, table)."""
    methods = distill_methods(workdir)
    if methods:
        return evaluate_distill_dir(
            workdir, methods, data_dir, output_dir, decode_examples_per_domain, max_examples_per_domain, check_decoding
        )
    cfg = _load_config(workdir)
    data_dir = data_dir or cfg.data.eval_dir
    if not data_dir:
        raise ValueError("no evaluation data: pass --data=PREPARED_DIR (a `distill-jax prepare` output)")
    if decode_examples_per_domain is not None:
        cfg.eval.decode_examples_per_domain = decode_examples_per_domain
    if max_examples_per_domain is not None:
        cfg.eval.max_examples_per_domain = max_examples_per_domain
    run = setup_run(cfg, eval_dir=data_dir)
    params, step = RunDir(workdir).restore_params(run, step)
    evaluator = build_evaluator(run, data_dir)
    per_domain, records = evaluator.run_with_records(params)
    extra: dict[str, Any] = {
        "step": step,
        "workdir": storage.check(workdir),
        "data": storage.check(data_dir),
        "samples": records[:5],
        "config": json.loads(cfg.to_json_best_effort()),
    }
    if check_decoding:
        extra["decoding_consistency"] = _check_decoding(run, evaluator, params)
    report, table = build_report(per_domain, run.train_domain_counts, cfg.eval.head_fraction, extra=extra)
    if check_decoding:
        c = extra["decoding_consistency"]
        table += (
            f"\nDecoding vs teacher-forced scoring on {c['rows']} rows / {c['steps']} steps: "
            f"{c['token_mismatches']} token mismatches, max |log-prob diff| {c['max_logprob_diff']:.2e} "
            f"({'consistent' if c['ok'] else 'INCONSISTENT'})"
        )
    if jax.process_index() == 0:
        from distill_jax import atomic
        from distill_jax.evaluation.plots import write_plots

        output_dir = output_dir or storage.join(workdir, "eval", f"step_{step}")
        paths = write_report(output_dir, report, table, title=f"Evaluation of {workdir} at step {step} on {data_dir}")
        atomic.write_jsonl(storage.join(output_dir, "predictions.jsonl"), records)
        write_plots(report, storage.join(output_dir, "plots"))
        logging.info("Report written to %s and %s (predictions: predictions.jsonl)", paths["json"], paths["md"])
    if check_decoding and not extra["decoding_consistency"]["ok"]:
        raise DecodingMismatch(f"{workdir}: {table.splitlines()[-1]}")
    return report, table


def evaluate_distill_dir(
    workdir: str,
    methods: list[str],
    data_dir: str | None,
    output_dir: str | None,
    decode_examples_per_domain: int | None,
    max_examples_per_domain: int | None,
    check_decoding: bool,
) -> tuple[dict, str]:
    """Every method's final student of a distill/demo directory on its eval set (or `data_dir`)."""
    data_dir = data_dir or storage.join(workdir, "eval_data")
    output_dir = output_dir or storage.join(workdir, "eval")
    reports, tables = {}, []
    for method in methods:
        report, table = evaluate_workdir(
            storage.join(workdir, method, "train"),
            data_dir,
            None,
            storage.join(output_dir, method),
            decode_examples_per_domain,
            max_examples_per_domain,
            check_decoding,
        )
        reports[method] = report
        tables.append(f"== {method} ({storage.join(workdir, method, 'train')}) ==\n{table}")
    return {"methods": reports, "data": storage.check(data_dir)}, "\n\n".join(tables)
