"""Input pipeline: how fast ``prepare`` and the grain loader run against what the train step consumes.

On the generated demo corpus, prepared by ``prepare_corpus``:
- ``prepare`` rows/s (rows read / wall seconds; best of two runs into fresh directories);
- loader batches/s: ``pipeline.build_train_dataset`` alone (padded and packed), iterated on the host;
- consumption: steps/s of the trainer's jitted step (``harness.build_trainer_step``) at the same
  batch shape on a batch the loader produced, and the ratio loader / consumption (target: >= 5x);
- fed: steps/s of the same step fed through ``DevicePrefetcher`` from the live loader, as
  ``trainer.train`` runs it. Loader and step share the cores here, so this is what the isolated
  ratio means in practice (fed = isolated: the loader costs the step nothing).

    python benchmarks/input_pipeline.py [--size tiny] [--num_train 6000] [--batches 60] [--steps 20]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import harness
import jax
import numpy as np

from distill_jax.data import pipeline, shards
from distill_jax.data.demo_corpus import write_demo_corpus
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.presets import demo_config
from distill_jax.process_env import reexec_with_malloc_tuning
from distill_jax.training.run_setup import setup_run


def time_prepare(corpus: str, out_root: str, runs: int = 2) -> tuple[str, dict[str, Any]]:
    """Prepares ``corpus`` ``runs`` times into fresh directories; the last directory and the timings."""
    options = dataclasses.replace(PrepareOptions.from_config(demo_config()), progress=False)
    seconds, out = [], ""
    for i in range(runs):
        out = os.path.join(out_root, f"prepared_{i}")
        start = time.perf_counter()
        summary = prepare_corpus([corpus], out, options)
        seconds.append(time.perf_counter() - start)
    return out, dict(
        rows=summary.read, written=summary.written, seconds=seconds, rows_per_s=summary.read / min(seconds)
    )


def _dataset(config: Any, run: Any, pack: bool) -> Iterator[dict[str, np.ndarray]]:
    """This process's batch stream exactly as ``trainer.train`` builds it."""
    weights = pipeline.mixture_weights(run.train_domain_counts, config.data.mixture, dict(config.data.domain_weights))
    return iter(
        pipeline.build_train_dataset(
            shards.open_domain_sources(config.data.train_dir),
            weights,
            run.domain_index,
            seed=config.seed,
            batch_size=config.train.batch_size,
            max_input_len=config.data.max_input_len,
            max_target_len=config.data.max_target_len,
            worker_threads=config.data.worker_threads,
            prefetch_batches=config.data.prefetch_batches,
            pack=pack,
        )
    )


def loader_rate(config: Any, run: Any, pack: bool, batches: int) -> dict[str, Any]:
    """Batches/s of the loader alone after a warm-up batch, and how full its rows are."""
    it = _dataset(config, run, pack)
    first = next(it)  # Starts the read threads and fills the buffers.
    start = time.perf_counter()
    examples = tokens = 0.0
    for _ in range(batches):
        batch = next(it)
        weights = batch["decoder_loss_weights"]
        examples += float(np.sum((batch["decoder_target_tokens"] == run.model_config.eos_token_id) * weights))
        tokens += float(np.sum(weights) + np.sum(batch["encoder_segment_ids"] > 0))
    seconds = time.perf_counter() - start
    capacity = batches * config.train.batch_size * (config.data.max_input_len + config.data.max_target_len)
    return dict(
        pack=pack,
        batches_per_s=batches / seconds,
        examples_per_s=examples / seconds,
        examples_per_batch=examples / batches,
        token_fill=tokens / capacity,
        sample_batch=first,
    )


def _time_steps(ours: harness.TrainerStep, state: Any, next_batch: Any, warmup: int, steps: int) -> tuple[Any, float]:
    """(updated state, median step seconds) of the step fed by ``next_batch()``."""
    sums = ours.fresh_sums()

    def one_step() -> None:
        nonlocal state, sums
        state, sums = ours.compiled(state, sums, next_batch())
        jax.block_until_ready(sums)

    step_s = harness.median(harness.timed_calls(one_step, warmup, steps))
    return state, step_s


def measure(config: Any, batches: int, steps: int, warmup: int) -> list[dict[str, Any]]:
    """One row per layout (padded, packed): loader alone, step alone on its batch, step fed by the loader."""
    run = setup_run(config)
    shape = (config.train.batch_size, config.data.max_input_len, config.data.max_target_len)
    ours, state = harness.build_trainer_step(run.model_config, config, *shape, num_domains=len(run.domain_names))
    rows = []
    for pack in (False, True):
        row = loader_rate(config, run, pack, batches)
        batch = ours.to_device(row.pop("sample_batch"))
        state, row["step_s"] = _time_steps(ours, state, lambda b=batch: b, warmup, steps)
        row["consumed_batches_per_s"] = 1.0 / row["step_s"]
        row["ratio"] = row["batches_per_s"] * row["step_s"]
        prefetcher = pipeline.DevicePrefetcher(
            _dataset(config, run, pack),
            lambda b: pipeline.host_to_global(b, run.batch_shardings),
            buffer_size=config.data.prefetch_batches,
        )
        try:
            state, row["fed_step_s"] = _time_steps(ours, state, prefetcher.__next__, warmup, steps)
        finally:
            prefetcher.close()
        rows.append(row)
    return rows


def run(
    size: str, num_train: int, batches: int, steps: int, warmup: int, workdir: str, batch_size: int | None = None
) -> dict[str, Any]:
    """Generates and prepares the demo corpus in ``workdir``, then measures loader and consumer (no header).

    Shapes are the demo's (``batch_size`` overrides its 32).
    """
    corpus = write_demo_corpus(os.path.join(workdir, "corpus"), seed=0, num_train=num_train, num_test_per_domain=0)
    train_dir, prepare = time_prepare(corpus["train"], workdir)
    config = demo_config()
    config.model.size = size
    config.data.train_dir = train_dir
    config.train.batch_size = batch_size or config.train.batch_size
    rows = measure(config, batches, steps, warmup)
    return dict(
        prepare=prepare,
        consumer=dict(
            size=size,
            batch_size=config.train.batch_size,
            input_len=config.data.max_input_len,
            target_len=config.data.max_target_len,
            worker_threads=config.data.worker_threads,
            prefetch_batches=config.data.prefetch_batches,
        ),
        rows=rows,
    )


COLUMNS = (
    ("layout", "layout", "s"),
    ("loader batch/s", "batches_per_s", ",.1f"),
    ("examples/batch", "examples_per_batch", ".1f"),
    ("token fill", "token_fill", ".0%"),
    ("step s", "step_s", ".3f"),
    ("step batch/s", "consumed_batches_per_s", ",.1f"),
    ("loader/step", "ratio", ".1f"),
    ("fed step s", "fed_step_s", ".3f"),
)


def summary(report: dict[str, Any]) -> str:
    prepare, consumer = report["prepare"], report["consumer"]
    rows = [{**r, "layout": "packed" if r["pack"] else "padded"} for r in report["rows"]]
    return (
        f"prepare: {prepare['rows']} rows in {min(prepare['seconds']):.2f} s = {prepare['rows_per_s']:,.0f} rows/s; "
        f"consumer: {consumer['size']} T5, batch {consumer['batch_size']}, "
        f"{consumer['input_len']}/{consumer['target_len']} tokens\n" + harness.format_table(COLUMNS, rows)
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="tiny", help="the consuming model's size (the demo's is tiny)")
    parser.add_argument("--num_train", type=int, default=6000, help="demo corpus rows (the demo's 6000)")
    parser.add_argument("--batches", type=int, default=60, help="loader batches timed per layout")
    parser.add_argument("--steps", type=int, default=20, help="train steps timed per layout (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch_size", type=int, help="overrides the demo's 32")


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as workdir:
        return run(args.size, args.num_train, args.batches, args.steps, args.warmup, workdir, args.batch_size)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses ``argv``, runs, prints the table and writes ``--json`` if given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    report = {**harness.report_header(argv), "input_pipeline": from_args(args)}
    harness.finish(report, args.json)
    print(summary(report["input_pipeline"]))
    return report


if __name__ == "__main__":
    reexec_with_malloc_tuning(sys.argv)  # The figures are measured as the CLI runs: with its allocator setting.
    main(sys.argv[1:])
