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


def test_dry_run_plans_calls_tokens_and_cost_without_spending(tmp_path):
    from distill_jax.data.demo_corpus import write_demo_corpus

    corpus = write_demo_corpus(str(tmp_path / "c"), seed=0, num_train=300, num_test_per_domain=4)
    out = _cli(
        "distill",
        "--dry_run",
        f"--workdir={tmp_path / 'w'}",
        f"--config.distill.pool={corpus['train']}",
        f"--config.distill.eval_data={corpus['test']}",
        "--config.teacher.kind=openai",
        "--config.teacher.base_url=http://127.0.0.1:9/v1",  # Nothing listens: a dry run sends nothing.
        "--config.distill.budget=30000",
        "--config.distill.budget_unit=tokens",
        "--config.distill.stages=2",
        "--config.distill.methods=random,naive",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nothing was sent or charged" in out.stdout
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| random |")]
    assert [r[2].strip() for r in rows] == ["0", "1", "all"]
    assert 0 < sum(int(r[7]) for r in rows[:2]) == int(rows[2][7])  # output tokens per stage add up
    assert float(rows[2][8]) <= 30000 and not (tmp_path / "w").exists()
