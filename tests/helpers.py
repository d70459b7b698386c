"""What many tests share: the repository root and the `distill-jax` command run as a subprocess."""

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
