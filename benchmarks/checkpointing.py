"""Checkpointing: what async Orbax saves cost the train loop, and save/restore seconds per model size.

Uses the trainer's step (``harness.build_trainer_step``) on synthetic full rows and the trainer's
``Checkpointer`` (state + data position + meta, async, keep-last).

- Overhead: N steps saving every k steps (at k, 2k, ... < N, so the last save has k steps to finish
  in the background) vs the same N steps never saving; both timed to the end of every pending
  write. Rounds alternate the two to spread machine noise. Reported: % overhead, seconds per save
  that the loop did not hide, the time each ``save`` call blocked the loop, and the overhead that
  per-save cost implies at the trainer's default ``train.checkpoint_every``.
- Save and restore: one synchronous save (``async_save=False``: all bytes written) and one restore
  onto the sharded abstract state, per size; bytes on disk.

    python benchmarks/checkpointing.py [--sizes tiny,small] [--overhead_sizes tiny] [--every 10]
        [--overhead_steps 40] [--rounds 2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import harness
import jax

from distill_jax.config import default_config
from distill_jax.models.t5_config import get_config, num_params
from distill_jax.process_env import reexec_with_malloc_tuning
from distill_jax.training.checkpoints import Checkpointer

META = {"benchmark": "checkpointing"}


@dataclasses.dataclass
class Setup:
    """One size's compiled step, its (advancing) state and a batch."""

    ours: harness.TrainerStep
    state: Any
    batch: dict[str, jax.Array]


def setup(size: str, preset: harness.Preset) -> Setup:
    config = default_config()
    config.model.size, config.model.dropout_rate = size, 0.0
    model_config = get_config(size, dropout_rate=0.0)
    shape = (preset.batch_size, preset.input_len, preset.target_len)
    ours, state = harness.build_trainer_step(model_config, config, *shape, num_domains=1)
    batch = ours.to_device(harness.synthetic_batch(*shape, model_config.vocab_size, seed=0))
    return Setup(ours, state, batch)


def _loop(ours: harness.TrainerStep, state: Any, batch: Any, steps: int, every: int, directory: str) -> tuple:
    """Runs ``steps`` steps, saving every ``every`` (0: never); (state, seconds incl. pending writes, save-call times)."""
    checkpointer = Checkpointer(directory, keep_last=2, keep_best=0)
    sums = ours.fresh_sums()
    save_calls = []
    start = time.perf_counter()
    for i in range(1, steps + 1):
        state, sums = ours.compiled(state, sums, batch)
        if every and i % every == 0 and i < steps:
            # Without this wait the save call would absorb the steps still queued on the device.
            jax.block_until_ready(state)
            called = time.perf_counter()
            checkpointer.save(i, state, {"next_index": i}, META)
            save_calls.append(time.perf_counter() - called)
    jax.block_until_ready((state, sums))
    checkpointer.close()  # Waits for the pending write: its cost belongs to the run.
    seconds = time.perf_counter() - start
    shutil.rmtree(directory)
    return state, seconds, save_calls


def overhead(size: str, run: Setup, steps: int, every: int, rounds: int, workdir: str) -> dict[str, Any]:
    """% step-time overhead of saving every ``every`` steps over ``steps`` steps, rounds alternating."""
    ours, state, batch = run.ours, run.state, run.batch
    # One save first: Orbax's first save in a process sets up thread pools and handlers, once per run.
    state, _, _ = _loop(ours, state, batch, every + 1, every, os.path.join(workdir, "warmup"))
    never, saving, save_calls = [], [], []
    for r in range(rounds):
        state, seconds, _ = _loop(ours, state, batch, steps, 0, os.path.join(workdir, f"never_{r}"))
        never.append(seconds)
        state, seconds, calls = _loop(ours, state, batch, steps, every, os.path.join(workdir, f"every_{r}"))
        saving.append(seconds)
        save_calls += calls
    run.state = state
    base, with_saves = harness.median(never), harness.median(saving)
    saves = (steps - 1) // every
    per_save = (with_saves - base) / saves
    step_s = base / steps
    default_every = default_config().train.checkpoint_every
    return dict(
        size=size,
        steps=steps,
        every=every,
        saves_per_run=saves,
        rounds=rounds,
        never_s=never,
        saving_s=saving,
        step_s=step_s,
        overhead_pct=100 * (with_saves - base) / base,
        unhidden_s_per_save=per_save,
        save_call_s=harness.median(save_calls),
        default_every=default_every,
        overhead_pct_at_default_every=100 * per_save / (default_every * step_s),
    )


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def save_restore(size: str, run: Setup, workdir: str) -> dict[str, Any]:
    """Seconds of one synchronous save and one restore of the full train state of ``size``.

    Two steps first: a fresh state's zero Adam moments would compress to nothing on disk.
    """
    ours, state = run.ours, run.state
    sums = ours.fresh_sums()
    for _ in range(2):
        state, sums = ours.compiled(state, sums, run.batch)
    jax.block_until_ready(state)
    run.state = state
    directory = os.path.join(workdir, f"save_{size}")
    checkpointer = Checkpointer(directory, keep_last=2, keep_best=0, async_save=False)
    save_s = []
    # Twice: a process's first Orbax save also sets up its thread pools and handlers.
    for step in (1, 2):
        start = time.perf_counter()
        checkpointer.save(step, state, {"next_index": step}, META)
        save_s.append(time.perf_counter() - start)
    checkpointer.close()
    size_bytes = _dir_bytes(os.path.join(directory, "2"))

    checkpointer = Checkpointer(directory, keep_last=2, keep_best=0)
    start = time.perf_counter()
    restored, _, _ = checkpointer.restore(2, ours.abstract_state)
    jax.block_until_ready(restored)
    restore_s = time.perf_counter() - start
    checkpointer.close()
    shutil.rmtree(directory)
    return dict(
        size=size,
        num_params=num_params(get_config(size)),
        bytes=size_bytes,
        first_save_s=save_s[0],
        save_s=save_s[1],
        restore_s=restore_s,
    )


def run(
    sizes: Sequence[str],
    overhead_sizes: Sequence[str],
    steps: int,
    every: int,
    rounds: int,
    workdir: str,
    overrides: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Save/restore for ``sizes``, overhead for ``overhead_sizes``, at the sizes' presets (no header)."""
    out: dict[str, Any] = dict(save_restore=[], overhead=[])
    for size in dict.fromkeys([*sizes, *overhead_sizes]):
        run_setup = setup(size, dataclasses.replace(harness.PRESETS[size], **(overrides or {})))
        if size in sizes:
            out["save_restore"].append(save_restore(size, run_setup, workdir))
        if size in overhead_sizes:
            out["overhead"].append(overhead(size, run_setup, steps, every, rounds, workdir))
    return out


SAVE_COLUMNS = (
    ("size", "size", "s"),
    ("params", "num_params", ",d"),
    ("MiB on disk", "mib", ",.0f"),
    ("first save s", "first_save_s", ".2f"),
    ("save s", "save_s", ".2f"),
    ("restore s", "restore_s", ".2f"),
)
OVERHEAD_COLUMNS = (
    ("size", "size", "s"),
    ("steps", "steps", "d"),
    ("every", "every", "d"),
    ("step s", "step_s", ".3f"),
    ("overhead", "overhead_pct", ".1f"),
    ("s/save lost", "unhidden_s_per_save", ".3f"),
    ("save() blocks s", "save_call_s", ".3f"),
    ("% at default every", "overhead_pct_at_default_every", ".2f"),
)


def summary(report: dict[str, Any]) -> str:
    saves = [{**r, "mib": r["bytes"] / 2**20} for r in report["save_restore"]]
    return (
        harness.format_table(SAVE_COLUMNS, saves)
        + "\n"
        + harness.format_table(OVERHEAD_COLUMNS, report["overhead"])
        + "\n(overhead in % of the never-saving run's time)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="tiny,small", help="sizes whose save/restore seconds are measured")
    parser.add_argument("--overhead_sizes", default="tiny", help="sizes whose async-save overhead is measured")
    parser.add_argument("--overhead_steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="checkpoint_every of the saving runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, help="overrides every size's preset")
    parser.add_argument("--input_len", type=int)
    parser.add_argument("--target_len", type=int)


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as workdir:
        sizes = [s for s in args.sizes.split(",") if s]
        overhead_sizes = [s for s in args.overhead_sizes.split(",") if s]
        overrides = {k: getattr(args, k) for k in ("batch_size", "input_len", "target_len") if getattr(args, k)}
        return run(sizes, overhead_sizes, args.overhead_steps, args.every, args.rounds, workdir, overrides)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses ``argv``, runs, prints the tables and writes ``--json`` if given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    report = {**harness.report_header(argv), "checkpointing": from_args(args)}
    harness.finish(report, args.json)
    print(summary(report["checkpointing"]))
    return report


if __name__ == "__main__":
    reexec_with_malloc_tuning(sys.argv)  # The figures are measured as the CLI runs: with its allocator setting.
    main(sys.argv[1:])
