"""Compile time and XLA memory analysis of the train step, per variant (remat, scan over layers, accumulation).

Nothing is trained and no parameters are allocated: each variant's step is lowered and compiled
ahead of time from abstract inputs (the trainer compiles the same way at start-up), so this runs
for model sizes that would not fit in memory.

    python benchmarks/train_step.py [--size tiny|small|base] [--batch_size 32] [--input_len 512]
        [--target_len 256] [--variants plain,remat=full,scan,scan+remat=dots_saveable,accum=4]
        [--mesh data=-1,fsdp=1,tensor=1] [--json OUT.json]

A variant is "plain" or "+"-joined settings: remat=none|full|dots_saveable, scan (model.scan_layers),
accum=N (train.grad_accum_steps). Memory figures are per device; the mesh spans every visible device
(XLA_FLAGS=--xla_force_host_platform_device_count=8 gives 8 virtual CPU devices).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax

from distill_jax.config import default_config
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import get_config, num_params
from distill_jax.process_env import reexec_with_malloc_tuning
from distill_jax.training import memory, optimizers, partitioning, step
from distill_jax.training.train_state import state_shardings


def parse_variant(text: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"remat": "none", "scan_layers": False, "grad_accum_steps": 1}
    for part in filter(None, text.split("+")):
        key, _, value = part.partition("=")
        if part == "plain":
            continue
        if part == "scan":
            settings["scan_layers"] = True
        elif key == "remat" and value:
            settings["remat"] = value
        elif key == "accum" and value.isdigit():
            settings["grad_accum_steps"] = int(value)
        else:
            raise ValueError(f"variant part {part!r}: expected plain, scan, remat=MODE or accum=N")
    return settings


def measure(size: str, variant: str, batch_size: int, input_len: int, target_len: int, mesh_axes: dict) -> dict:
    """Lower and compile one variant's train step; its timings and per-device memory."""
    settings = parse_variant(variant)
    model_config = get_config(size, remat=settings["remat"], scan_layers=settings["scan_layers"])
    cfg = default_config()
    tx = optimizers.make_optimizer(cfg.optimizer, cfg.train.steps)
    mesh = partitioning.make_mesh(**mesh_axes)
    rules = cfg.mesh.logical_axis_rules
    abstract_state, shardings = state_shardings(model_config, tx, mesh, rules)
    batch_shardings = step.batch_shardings(mesh, rules)
    train_step = step.make_train_step(
        T5Transformer(model_config),
        tx,
        mesh=mesh,
        rules=rules,
        state_shardings=shardings,
        batch_shardings=batch_shardings,
        num_domains=4,
        dropout_seed=0,
        grad_accum_steps=settings["grad_accum_steps"],
    )
    batch = step.batch_spec(batch_size, input_len, target_len, batch_shardings)
    sums = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=partitioning.replicated(mesh)),
        step.zero_metric_sums(4),
    )
    start = time.perf_counter()
    with partitioning.mesh_context(mesh, rules):
        lowered = train_step.jitted.lower(abstract_state, sums, batch, None)  # no online teacher
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    return {
        "size": size,
        "variant": variant,
        "trace_lower_s": lowered_at - start,
        "compile_s": compiled_at - lowered_at,
        "memory_bytes": memory.memory_footprint(compiled),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--input_len", type=int, default=512)
    parser.add_argument("--target_len", type=int, default=256)
    parser.add_argument("--variants", default="plain,remat=full,remat=dots_saveable,scan,scan+remat=full,accum=4")
    parser.add_argument("--mesh", default="data=-1,fsdp=1,tensor=1")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    mesh_axes = {k: int(v) for k, v in (item.split("=") for item in args.mesh.split(","))}
    rows = []
    for variant in args.variants.split(","):
        row = measure(args.size, variant, args.batch_size, args.input_len, args.target_len, mesh_axes)
        footprint = row["memory_bytes"]
        print(
            f"{args.size:6s} {variant:24s} trace+lower {row['trace_lower_s']:6.1f} s  compile {row['compile_s']:6.1f} s  "
            f"total {memory.human_bytes(footprint.get('total', 0)):>10s}  temp {memory.human_bytes(footprint.get('temp', 0)):>10s}",
            flush=True,
        )
        rows.append(row)
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            "jax": jax.__version__,
            "python": sys.version.split()[0],
            "load_average": os.getloadavg(),
        },
        "shapes": {
            "params": num_params(get_config(args.size)),
            "batch_size": args.batch_size,
            "input_len": args.input_len,
            "target_len": args.target_len,
            "mesh": mesh_axes,
        },
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    reexec_with_malloc_tuning(sys.argv)  # The figures are measured as the CLI runs: with its allocator setting.
    main()
