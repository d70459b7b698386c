"""`distill-jax distill`: listed, documented, and failing clearly on a config without a pool."""

import os
import subprocess
import sys


def _cli(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "distill_jax.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_distill_is_a_subcommand_with_help():
    assert "distill" in _cli("--help").stdout
    out = _cli("distill", "--helpfull")
    assert "--workdir" in out.stdout and "--coordinator_address" in out.stdout  # absl exits 1 after --helpfull.


def test_missing_pool_is_a_clear_error(tmp_path):
    out = _cli("distill", f"--workdir={tmp_path / 'w'}")
    assert out.returncode != 0
    assert "no pool files: set --config.distill.pool" in out.stderr
