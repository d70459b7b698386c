"""`distill-jax eval --workdir=DIR --data=PREPARED_DIR`: per-domain metrics of a trained student, with a report."""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding config.json and checkpoints/.")
_DATA = flags.DEFINE_string("data", None, "Prepared held-out directory; default: the training config's data.eval_dir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the latest.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where report.json/report.md go; default: WORKDIR/eval/step_N.")
_DECODE_PER_DOMAIN = flags.DEFINE_integer(
    "decode_examples_per_domain", None, "Examples greedy-decoded per domain (default: the training config's)."
)
_MAX_PER_DOMAIN = flags.DEFINE_integer(
    "max_examples_per_domain", None, "Examples per domain for loss/accuracy, 0 = all (default: the config's)."
)
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def evaluate_workdir(
    workdir: str,
    data_dir: str | None = None,
    step: int | None = None,
    output_dir: str | None = None,
    decode_examples_per_domain: int | None = None,
    max_examples_per_domain: int | None = None,
) -> tuple[dict, str]:
    """Restores a checkpoint of `workdir`, evaluates it on `data_dir` and writes the report. Returns (report, table)."""
    import ml_collections

    from distill_jax.evaluation.report import build_report, write_report
    from distill_jax.training.run_setup import build_evaluator, setup_run
    from distill_jax.training.trainer import restore_params

    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"{config_path} not found: --workdir must be a directory written by `distill-jax train`"
        )
    with open(config_path, encoding="utf-8") as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    data_dir = data_dir or cfg.data.eval_dir
    if not data_dir:
        raise ValueError("no evaluation data: pass --data=PREPARED_DIR (a `distill-jax prepare` output)")
    if decode_examples_per_domain is not None:
        cfg.eval.decode_examples_per_domain = decode_examples_per_domain
    if max_examples_per_domain is not None:
        cfg.eval.max_examples_per_domain = max_examples_per_domain
    run = setup_run(cfg, eval_dir=data_dir)
    params, step = restore_params(run, workdir, step)
    per_domain, samples = build_evaluator(run, data_dir).run(params, num_samples_to_log=5)
    report, table = build_report(
        per_domain,
        run.train_domain_counts,
        cfg.eval.head_fraction,
        extra={
            "step": step,
            "workdir": os.path.abspath(workdir),
            "data": os.path.abspath(data_dir),
            "samples": samples,
            "config": json.loads(cfg.to_json_best_effort()),
        },
    )
    import jax

    if jax.process_index() == 0:
        paths = write_report(
            output_dir or os.path.join(workdir, "eval", f"step_{step}"),
            report,
            table,
            title=f"Evaluation of {workdir} at step {step} on {data_dir}",
        )
        logging.info("Report written to %s and %s", paths["json"], paths["md"])
    return report, table


def main(argv):
    del argv
    common.configure_logging()
    common.initialize_distributed()
    _, table = evaluate_workdir(
        _WORKDIR.value, _DATA.value, _STEP.value, _OUTPUT_DIR.value, _DECODE_PER_DOMAIN.value, _MAX_PER_DOMAIN.value
    )
    print(table)


def run(argv):
    app.run(main, argv=argv)
