"""A stage's student, evaluated: per-domain metrics, every decoded row on disk, and the stage's scalars.

The scheduler calls this at the end of each stage's training, with the same evaluator the trainer
and the `eval` job use (training.evaluator), so a stage's figures are the figures `eval` would print.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
from absl import logging

from distill_jax import atomic, metrics, multihost, storage
from distill_jax.training.evaluator import summary_scalars
from distill_jax.training.metrics_writer import MetricsWriter
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import build_evaluator, setup_run

PREDICTIONS_FILE = "eval_predictions.jsonl"


def evaluate(cfg: ml_collections.ConfigDict, run_dir: str, stage_dir: str, label: str) -> dict[str, Any]:
    """Per-domain metrics of the newest student in `run_dir` on `cfg.data.eval_dir`; rows to stage_dir/PREDICTIONS_FILE."""
    run = setup_run(cfg)
    params, step = RunDir(run_dir).restore_params(run)
    per_domain, records = build_evaluator(run, cfg.data.eval_dir).run_with_records(params)
    records = multihost.gather_rows(records)
    path = storage.join(stage_dir, PREDICTIONS_FILE)
    if multihost.is_main():
        atomic.write_jsonl(path, records, sort_keys=True)
    logging.info(
        "%s: student of step %d answers %d of %d eval rows; predictions in %s",
        label,
        step,
        sum(r["correct"] for r in records),
        len(records),
        path,
    )
    return per_domain


def stage_scalars(
    stage: int,
    spent: float,
    quotas: Mapping[str, int],
    cumulative_quotas: Mapping[str, int],
    per_domain: Mapping[str, Any],
    pool_sizes: Mapping[str, int],
    cfg: ml_collections.ConfigDict,
) -> dict[str, float]:
    """TensorBoard scalars of a stage: budget spent, quotas, mixture weights, head/tail eval summaries."""
    total = max(sum(cumulative_quotas.values()), 1)
    scalars = {"distill/stage": stage, "distill/budget_spent": spent}
    scalars.update({f"distill/quota/{d}": n for d, n in quotas.items()})
    scalars.update({f"distill/mixture_weight/{d}": n / total for d, n in cumulative_quotas.items()})
    head, tail = metrics.split_head_tail(pool_sizes, cfg.eval.head_fraction)
    scalars.update(summary_scalars(per_domain, head, tail, prefix="distill_eval"))
    return scalars


def write_scalars(run_dir: str, step: int, scalars: Mapping[str, float]) -> None:
    writer = MetricsWriter(run_dir)
    writer.write(step, dict(scalars))
    writer.close()
