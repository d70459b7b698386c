"""`distill-jax demo`: the product's claim on the embedded long-tailed corpus, in CPU minutes.

The default demo generates the long-tailed pool and a balanced test set (data.demo_corpus), then
runs `distill` with the exact program teacher (which also synthesizes new tail examples) for
random sampling, BalDistill-N and BalDistill-A at the same teacher budget, same student and same
steps, and prints one table: per-domain answer accuracy, head / tail / macro / micro, budget
spent and synthesized rows per method. `single_student=True` keeps the older demo: one student
trained on the whole pool's natural mix.

Layout of DIR (printed at the end):
  corpus/                 train.jsonl (the pool), test.jsonl (50 per domain)
  eval_data/              the test set, prepared
  <method>/train/         each method's training run (checkpoints, TensorBoard, metrics.jsonl)
  <method>/stage_i/       purchased/dropped rows, eval_predictions.jsonl, the stage's shards
  report.md, report.json, distill_curves.png, domain_accuracy.png
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from distill_jax.data.demo_corpus import write_demo_corpus
from distill_jax.distill import report as distill_report
from distill_jax.distill.scheduler import Preempted, run_distillation


def run_baldistill_demo(workdir: str, config: ml_collections.ConfigDict, num_train: int) -> tuple[dict[str, Any], str]:
    """Writes the corpus, runs every method of `config.distill.methods`; returns (report, printed text)."""
    files = write_demo_corpus(os.path.join(workdir, "corpus"), seed=config.seed, num_train=num_train)
    with config.unlocked():
        config.distill.pool = files["train"]
        config.distill.eval_data = files["test"]
    logging.info(
        "demo: %d-row long-tailed pool in %s; methods %s at %s %s each.",
        num_train,
        files["train"],
        config.distill.methods,
        config.distill.budget,
        config.distill.budget_unit,
    )
    try:
        result = run_distillation(config, workdir)
    except Preempted as err:  # SIGTERM: checkpoints are saved; a table of half-trained students would mislead.
        raise SystemExit(f"demo: {err}; re-run the same command to resume") from err
    text = distill_report.terminal_table(result) + _footer(workdir, result)
    return result, text


def _footer(workdir: str, result: dict[str, Any]) -> str:
    lines = ["", "Where things are:"]
    lines.append(f"  pool and test set   {os.path.join(workdir, 'corpus')}")
    for name in result["methods"]:
        lines.append(
            f"  {name:<19} {os.path.join(workdir, name)} (training run: {os.path.join(workdir, name, 'train')})"
        )
    lines.append(f"  report              {os.path.join(workdir, 'report.md')} (+ report.json, *.png)")
    lines.append(f"  TensorBoard         tensorboard --logdir {workdir}")
    lines.append(f"  re-evaluate         distill-jax eval --workdir={workdir}")
    return "\n".join(lines) + "\n"


def run_training_demo(workdir: str, config: ml_collections.ConfigDict, num_train: int) -> tuple[dict, str]:
    """The single-student demo: prepare the corpus, train one student on the natural mix, report per domain."""
    from distill_jax.data.prepare import PrepareOptions, prepare_corpus
    from distill_jax.data.shards import load_manifest
    from distill_jax.evaluation.report import build_report, write_report
    from distill_jax.training.trainer import train

    files = write_demo_corpus(os.path.join(workdir, "corpus"), seed=config.seed, num_train=num_train)
    options = PrepareOptions.from_config(config)
    data_dirs = {}
    for split, path in files.items():
        data_dirs[split] = os.path.join(workdir, "data", split)
        summary = prepare_corpus([path], data_dirs[split], options)
        logging.info("Prepared %s:\n%s", split, summary.format_table())
    with config.unlocked():
        config.data.train_dir = data_dirs["train"]
        config.data.eval_dir = data_dirs["test"]
    result = train(config, os.path.join(workdir, "run"))
    if result.preempted:
        raise SystemExit(f"demo: preempted at step {result.step}; re-run the same command to resume")
    counts = {d: v["num_examples"] for d, v in load_manifest(data_dirs["train"])["domains"].items()}
    report, table = build_report(
        result.eval_per_domain,
        counts,
        config.eval.head_fraction,
        extra={"step": result.step, "final_metrics": result.final_metrics},
    )
    paths = write_report(os.path.join(workdir, "report"), report, table, title="distill-jax demo (one student)")
    footer = (
        f"\nReport: {paths['md']}\nTraining run: {os.path.join(workdir, 'run')} "
        f"(distill-jax eval --workdir={os.path.join(workdir, 'run')})\n"
        f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'run', 'tensorboard')}"
    )
    return report, table + footer
