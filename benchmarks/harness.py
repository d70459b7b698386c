"""What the issue-8 benchmarks share: the trainer's step built as the trainer builds it, timing, the
matmul peak probe, and the machine/version record every figure carries.

A plain module beside the scripts (benchmarks/ is not a package): scripts run from the repository
root find it on ``sys.path[0]``; tests put benchmarks/ on ``sys.path`` first.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config
from distill_jax.training import interval_scalars, optimizers, partitioning, step
from distill_jax.training.train_state import TrainState, create_train_state, state_shardings


@dataclasses.dataclass(frozen=True)
class Preset:
    """A train-step shape per model size, and how many steps to time at it."""

    batch_size: int
    input_len: int
    target_len: int
    steps: int


# CPU-sized defaults (tiny = the demo's shapes); base is meant for a GPU (with --dtype bfloat16).
PRESETS = {
    "tiny": Preset(batch_size=32, input_len=72, target_len=104, steps=20),
    "small": Preset(batch_size=8, input_len=64, target_len=64, steps=5),
    "base": Preset(batch_size=32, input_len=512, target_len=256, steps=10),
}
# Variables that change the figures: allocator behaviour, XLA options, thread counts.
_ENVIRONMENT = ("GLIBC_TUNABLES", "LD_PRELOAD", "XLA_FLAGS", "OMP_NUM_THREADS", "JAX_PLATFORMS")
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "torch", "transformers")


def cpu_model() -> str:
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info() -> dict[str, Any]:
    """CPU, cores, JAX devices, and the 1/5/15-minute load average before the run (``finish`` adds after)."""
    return dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        jax_backend=jax.default_backend(),
        jax_devices=f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        load_average_before=list(os.getloadavg()),
        environment={k: os.environ[k] for k in _ENVIRONMENT if k in os.environ},
    )


def report_header(argv: Sequence[str] | None) -> dict[str, Any]:
    """The fields every JSON report starts with: the command, the machine and the versions."""
    args = list(sys.argv[1:] if argv is None else argv)
    return dict(command=" ".join([sys.executable, sys.argv[0], *args]), machine=machine_info(), versions=versions())


def finish(report: dict[str, Any], json_path: str | None) -> None:
    """Records the load average after the run and writes the report to ``json_path`` if given."""
    report["machine"]["load_average_after"] = list(os.getloadavg())
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


def timed_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (which must wait for its own result) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def page_faults() -> int:
    """Minor page faults of this process so far (pages the kernel mapped and zeroed on first touch)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def median(times: Sequence[float]) -> float:
    return statistics.median(times)


def matmul_peak_flops(n: int, dtype: str = "float32", repeats: int = 10) -> float:
    """FLOP/s of the best of ``repeats`` jitted [n, n] x [n, n] products on the default device.

    What one device can do on the densest op there is: the ceiling any model step is measured
    against on CPU, where no datasheet figure applies (the cores' clocks and vector units vary).
    """
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    best = min(timed_calls(lambda: dot(a, b).block_until_ready(), warmup=2, repeats=repeats))
    return 2.0 * n**3 / best


def peak_flops(measured: float) -> tuple[float, str]:
    """Per-device peak for MFU and where it comes from: the datasheet table on accelerators, the probe on CPU."""
    if jax.default_backend() != "cpu":
        table = interval_scalars.peak_flops_per_device(0.0)
        if table:
            return (
                table,
                f"interval_scalars.PEAK_FLOPS_BY_DEVICE_KIND[{jax.devices()[0].device_kind}] (dense bf16 datasheet)",
            )
    return measured, "measured matmul probe (this run)"


@dataclasses.dataclass
class TrainerStep:
    """The trainer's compiled step and what it runs on: ``state, sums = compiled(state, sums, batch)``."""

    compiled: Any
    mesh: jax.sharding.Mesh
    batch_shardings: dict[str, Any]
    abstract_state: TrainState
    num_domains: int

    def fresh_sums(self) -> dict[str, jax.Array]:
        return step.zero_metric_sums(self.num_domains, self.mesh)

    def to_device(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.device_put(v, self.batch_shardings[k]) for k, v in host_batch.items()}


def build_trainer_step(
    model_config: T5Config,
    config: ml_collections.ConfigDict,
    batch_size: int,
    input_len: int,
    target_len: int,
    num_domains: int,
    devices: Sequence[jax.Device] | None = None,
) -> tuple[TrainerStep, TrainState]:
    """The step and the initial state exactly as ``trainer.train`` builds them from ``config``.

    Mesh, optimizer and shardings as in ``run_setup.setup_run``; the state from
    ``create_train_state``; the step from ``step.make_train_step`` with the config's loss settings,
    compiled ahead of time for the batch shape (state and metric sums donated). ``devices``: the mesh's
    devices (all by default).
    """
    mesh = partitioning.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    rules = tuple(tuple(r) for r in config.mesh.logical_axis_rules)
    tx = optimizers.make_optimizer(config.optimizer, config.optimizer.schedule_steps or config.train.steps)
    abstract_state, shardings = state_shardings(model_config, tx, mesh, rules)
    batch_shardings = step.batch_shardings(mesh, rules)
    train_step = step.make_train_step(
        T5Transformer(model_config),
        tx,
        mesh=mesh,
        rules=rules,
        state_shardings=shardings,
        batch_shardings=batch_shardings,
        num_domains=num_domains,
        dropout_seed=config.seed + 1,
        dropout_prng=config.train.dropout_prng,
        label_smoothing=config.train.label_smoothing,
        z_loss=config.train.z_loss,
        grad_accum_steps=config.train.grad_accum_steps,
    )
    compiled = train_step.compile(abstract_state, step.batch_spec(batch_size, input_len, target_len, batch_shardings))
    state = create_train_state(model_config, tx, mesh, rules, config.seed)
    return TrainerStep(compiled, mesh, batch_shardings, abstract_state, num_domains), state


def synthetic_batch(
    batch_size: int, input_len: int, target_len: int, vocab_size: int, seed: int, eos_id: int = 1
) -> dict[str, np.ndarray]:
    """A batch of full rows (no padding) of random ids ending in EOS, in the step's feature names.

    Full rows make every position a real token, so tokens/s means the same thing for both
    frameworks and for the FLOP count (which counts the padded shapes).
    """
    rng = np.random.default_rng(seed)

    def rows(length: int) -> np.ndarray:
        ids = rng.integers(3, vocab_size, (batch_size, length), dtype=np.int32)
        ids[:, -1] = eos_id
        return ids

    def layout(length: int) -> tuple[np.ndarray, np.ndarray]:
        return np.ones((batch_size, length), np.int32), np.tile(np.arange(length, dtype=np.int32), (batch_size, 1))

    enc_seg, enc_pos = layout(input_len)
    dec_seg, dec_pos = layout(target_len)
    return dict(
        encoder_input_tokens=rows(input_len),
        encoder_segment_ids=enc_seg,
        encoder_positions=enc_pos,
        decoder_target_tokens=rows(target_len),
        decoder_segment_ids=dec_seg,
        decoder_positions=dec_pos,
        decoder_loss_weights=np.ones((batch_size, target_len), np.float32),
        decoder_domain_ids=np.zeros((batch_size, target_len), np.int32),
    )


def format_table(columns: Sequence[tuple[str, str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table: ``columns`` are (header, row key, format spec); missing values print as '-'."""
    widths = [max(len(h), 10) for h, _, _ in columns]
    cells = [[(format(r[k], spec) if r.get(k) is not None else "-") for _, k, spec in columns] for r in rows]
    widths = [max([w] + [len(c[i]) for c in cells]) for i, w in enumerate(widths)]
    lines = ["  ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
