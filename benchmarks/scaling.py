"""Scaling: the trainer's step on 1, 2, 4, 8 devices at a fixed global batch (strong scaling).

    python benchmarks/scaling.py [--size tiny] [--devices 1,2,4,8] [--layouts data,fsdp] [--json scaling.json]

For every device count n and layout (``data``: mesh data=n; ``fsdp``: mesh fsdp=n, params and
optimizer state sharded; ``data_tensor``: data=n/2 x tensor=2) it builds the step exactly as the
trainer does on the first n devices, runs the same synthetic batches from the same initial state,
and reports step time, tokens/s, speed-up over n=1, and the correctness figures: the loss of every
step and the largest parameter difference after the last step, both against the one-device run.

On CPU the script forces 8 virtual host devices (``XLA_FLAGS``, before JAX is imported). They
share the machine's cores, so there the speed-up column measures the *overhead* of partitioning
(collectives, per-device dispatch), not scaling; real scaling figures come from a multi-GPU/TPU host.
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules and "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # Must precede the first jax import; a no-op on accelerators (it only affects the host platform).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import harness  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from distill_jax.config import default_config  # noqa: E402
from distill_jax.models.t5_config import get_config  # noqa: E402
from distill_jax.process_env import reexec_with_malloc_tuning

LAYOUTS = {
    "data": lambda n: dict(data=n, fsdp=1, tensor=1),
    "fsdp": lambda n: dict(data=1, fsdp=n, tensor=1),
    "data_tensor": lambda n: dict(data=n // 2, fsdp=1, tensor=2),
}


def measure(
    size: str, n: int, layout: str, preset: harness.Preset, warmup: int, dtype: str
) -> tuple[dict[str, Any], list[float], dict[str, np.ndarray]]:
    """One (device count, layout) run: its timing row, per-step losses and final parameters (host arrays)."""
    config = default_config()
    config.model.size, config.model.dtype, config.model.dropout_rate = size, dtype, 0.0
    config.mesh.update(LAYOUTS[layout](n))
    model_config = get_config(size, dtype=dtype, dropout_rate=0.0)
    batches = [
        harness.synthetic_batch(preset.batch_size, preset.input_len, preset.target_len, model_config.vocab_size, s)
        for s in range(preset.steps)
    ]
    ours, state = harness.build_trainer_step(
        model_config, config, preset.batch_size, preset.input_len, preset.target_len, 1, jax.devices()[:n]
    )
    device_batches = [ours.to_device(b) for b in batches]

    losses = []
    for batch in device_batches:  # Correctness pass: the same steps as every other layout, from the same init.
        state, sums = ours.compiled(state, ours.fresh_sums(), batch)
        losses.append(float(sums["ce_sum"].sum() / sums["token_count"].sum()))
    params = jax.tree.map(np.asarray, state.params)

    sums = ours.fresh_sums()
    calls = iter(range(1 << 30))

    def one_step() -> None:
        nonlocal state, sums
        state, sums = ours.compiled(state, sums, device_batches[next(calls) % len(device_batches)])
        jax.block_until_ready((state, sums))

    step_s = harness.median(harness.timed_calls(one_step, warmup, preset.steps))
    row = dict(
        devices=n,
        layout=layout,
        mesh="x".join(str(v) for v in LAYOUTS[layout](n).values()),
        step_s=step_s,
        tokens_per_s=preset.batch_size * (preset.input_len + preset.target_len) / step_s,
    )
    return row, losses, params


def run(
    size: str, device_counts: Sequence[int], layouts: Sequence[str], overrides: dict[str, int], warmup: int, dtype: str
) -> dict[str, Any]:
    """Every (n, layout) row with its speed-up and its differences from the one-device run."""
    if max(device_counts) > jax.device_count():
        raise SystemExit(f"--devices asks for {max(device_counts)} devices; this process has {jax.device_count()}")
    preset = dataclasses.replace(harness.PRESETS[size], **overrides)
    reference_row, reference_losses, reference_params = measure(size, 1, "data", preset, warmup, dtype)
    rows = [reference_row]
    for n in device_counts:
        for layout in layouts:
            if n == 1 or (layout == "data_tensor" and n < 4):
                continue  # n=1 is the reference; data_tensor needs data >= 2 and tensor = 2.
            row, losses, params = measure(size, n, layout, preset, warmup, dtype)
            row["max_loss_diff"] = float(np.max(np.abs(np.subtract(losses, reference_losses))))
            row["max_param_diff"] = max(
                float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params))
            )
            rows.append(row)
    for row in rows:
        row["speedup"] = reference_row["step_s"] / row["step_s"]
    return dict(size=size, dtype=dtype, **dataclasses.asdict(preset), reference_losses=reference_losses, rows=rows)


COLUMNS = (
    ("devices", "devices", "d"),
    ("layout", "layout", "s"),
    ("mesh d x f x t", "mesh", "s"),
    ("s/step", "step_s", ".3f"),
    ("tok/s", "tokens_per_s", ",.0f"),
    ("speed-up", "speedup", ".2f"),
    ("max |loss diff|", "max_loss_diff", ".1e"),
    ("max |param diff|", "max_param_diff", ".1e"),
)


def summary(report: dict[str, Any]) -> str:
    return (
        f"scaling: {report['size']} {report['dtype']}, global batch {report['batch_size']}, "
        f"lengths {report['input_len']}/{report['target_len']}, {report['steps']} steps; diffs vs 1 device\n"
        + harness.format_table(COLUMNS, report["rows"])
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=tuple(harness.PRESETS))
    parser.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts (the first n devices)")
    parser.add_argument("--layouts", default="data,fsdp,data_tensor", help=f"comma-separated: {', '.join(LAYOUTS)}")
    parser.add_argument("--batch_size", type=int, help="global batch (must divide by every device count)")
    parser.add_argument("--input_len", type=int)
    parser.add_argument("--target_len", type=int)
    parser.add_argument("--steps", type=int, help="steps per run: compared for correctness, then timed (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    layouts = args.layouts.split(",")
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        parser.error(f"unknown layouts {sorted(unknown)}; choose from {', '.join(LAYOUTS)}")
    overrides = {k: getattr(args, k) for k in ("batch_size", "input_len", "target_len", "steps") if getattr(args, k)}
    report = {**harness.report_header(argv)}
    counts = [int(n) for n in args.devices.split(",")]
    report["scaling"] = run(args.size, counts, layouts, overrides, args.warmup, args.dtype)
    harness.finish(report, args.json)
    print(summary(report["scaling"]))
    return report


if __name__ == "__main__":
    reexec_with_malloc_tuning(sys.argv)  # The figures are measured as the CLI runs: with its allocator setting.
    main()
