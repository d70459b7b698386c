"""`distill-jax demo --workdir=DIR`: the whole path on the embedded long-tailed corpus, on CPU in minutes.

generate corpus -> prepare train and test shards -> train the tiny student (with periodic
per-domain eval) -> report a per-domain table, head vs tail.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the corpus, shards, checkpoints, logs and report.")
_NUM_TRAIN = flags.DEFINE_integer(
    "num_train", 6000, "Training examples in the generated corpus (split by a power law)."
)
_CONFIG = common.define_config_flag("demo")
flags.mark_flags_as_required(["workdir"])


def run_demo(workdir: str, config, num_train: int = 6000) -> tuple[dict, str]:
    from distill_jax.data.demo_corpus import write_demo_corpus
    from distill_jax.data.prepare import PrepareOptions, prepare_corpus
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
    if result.preempted:  # SIGTERM: the checkpoint is saved; a report of a half-trained student would mislead.
        raise SystemExit(f"demo: preempted at step {result.step}; re-run the same command to resume")
    from distill_jax.data.shards import load_manifest

    counts = {d: v["num_examples"] for d, v in load_manifest(data_dirs["train"])["domains"].items()}
    report, table = build_report(
        result.eval_per_domain,
        counts,
        config.eval.head_fraction,
        extra={"step": result.step, "final_metrics": result.final_metrics},
    )
    paths = write_report(os.path.join(workdir, "report"), report, table, title="distill-jax demo")
    footer = (
        f"\nReport: {paths['md']}\nTensorBoard: tensorboard --logdir {os.path.join(workdir, 'run', 'tensorboard')}\n"
        f"Metrics log: {os.path.join(workdir, 'run', 'metrics.jsonl')}"
    )
    return report, table + footer


def main(argv):
    del argv
    common.configure_logging()
    _, text = run_demo(_WORKDIR.value, _CONFIG.value, _NUM_TRAIN.value)
    print(text)


def run(argv):
    app.run(main, argv=argv)
