"""What a run needs per device, reported at start-up: XLA's memory analysis of the compiled train step, and the
bytes of the state (and of an online teacher's params) that stay resident between steps."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp


def memory_footprint(compiled: jax.stages.Compiled) -> dict[str, int]:
    """Per-device bytes of a compiled step from XLA's memory analysis ({} where the backend has none).

    ``total`` = arguments + outputs - aliased (donated buffers reused for outputs) + temporaries +
    generated code: what one device must hold while the step runs.
    """
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    out = {
        "arguments": stats.argument_size_in_bytes,
        "outputs": stats.output_size_in_bytes,
        "aliased": stats.alias_size_in_bytes,
        "temp": stats.temp_size_in_bytes,
        "generated_code": stats.generated_code_size_in_bytes,
    }
    out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temp"] + out["generated_code"]
    return {k: int(v) for k, v in out.items()}


def human_bytes(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} {units[i]}" if i == 0 else f"{n:.2f} {units[i]}"


def memory_line(footprint: Mapping[str, int]) -> str:
    """One log line: each of memory_footprint's sizes in human units."""
    if not footprint:
        return "train step memory: not reported by this backend"
    sizes = ", ".join(f"{k} {human_bytes(v)}" for k, v in footprint.items() if k != "total")
    return f"train step memory per device (XLA memory analysis): total {human_bytes(footprint['total'])} = {sizes}"


def resident_line(student_state_bytes: int, teacher_bytes: int | None) -> str:
    """One log line: per-device bytes of the student's state and (online KD) the frozen teacher's params."""
    line = f"resident per device: student params + optimizer state {human_bytes(student_state_bytes)}"
    if teacher_bytes is None:
        return line
    return f"{line}, teacher params {human_bytes(teacher_bytes)} (frozen: no gradients, no optimizer state)"


def per_device_bytes(tree: Any) -> int:
    """Bytes of a tree of (possibly sharded, possibly abstract) arrays held by the first device."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
        total += jnp.dtype(leaf.dtype).itemsize * math.prod(shape)
    return total
