"""What many tests share: the repository root, the `distill-jax` command run as a subprocess, a first training batch."""

import os
import subprocess
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])


def cli(*args: str, devices: int | None = 1, env: dict[str, str] | None = None, cwd: str = REPO, timeout: float = 900):
    """`distill-jax ARGS...` in a fresh process (devices: virtual CPU devices; None keeps the caller's XLA_FLAGS)."""
    environment = {**os.environ, **(env or {})}
    if devices is not None:
        environment["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run(
        [sys.executable, "-m", "distill_jax.cli.main", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def first_train_batch(cfg, batch_size: int = 16) -> dict:
    """The first natural-mix batch of ``cfg``'s training data, at its ``data.max_*_len`` (seed 0)."""
    from distill_jax.data import pipeline, shards
    from distill_jax.training.run_setup import setup_run

    run = setup_run(cfg)
    sources = shards.open_domain_sources(cfg.data.train_dir)
    weights = pipeline.mixture_weights(run.train_domain_counts, "natural")
    dataset = pipeline.build_train_dataset(
        sources,
        weights,
        run.domain_index,
        seed=0,
        batch_size=batch_size,
        max_input_len=cfg.data.max_input_len,
        max_target_len=cfg.data.max_target_len,
    )
    return next(iter(dataset))
