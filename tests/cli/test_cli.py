"""The command line: dispatch, prepare's console contract, eval reports, and the demo end to end."""

import json
import os
import subprocess
import sys

import pytest

from distill_jax.cli.evaluate import evaluate_workdir
from distill_jax.training.trainer import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, **kw):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return subprocess.run(
        [sys.executable, "-m", "distill_jax.cli.main", *args], cwd=REPO, env=env, capture_output=True, text=True, **kw
    )


def test_usage_and_unknown_subcommand():
    out = cli()
    assert out.returncode == 2 and "prepare" in out.stdout and "demo" in out.stdout
    out = cli("bogus")
    assert out.returncode == 2 and "unknown subcommand 'bogus'" in out.stderr


def test_prepare_reports_counts_and_rejects_and_fails_when_nothing_is_usable(tmp_path):
    corpus = tmp_path / "teacher.jsonl"
    corpus.write_text(
        "\n".join(
            [
                json.dumps({"id": "1", "domain": "math", "input": "2+2?", "target": "4", "rationale": "2 plus 2."}),
                json.dumps({"id": "2", "domain": "math", "input": "3+3?"}),
                "{not json",
                json.dumps({"id": "3", "domain": "words", "input": "Reverse ab", "target": "ba"}),
            ]
        )
        + "\n"
    )
    out = cli("prepare", f"--input={corpus}", f"--output_dir={tmp_path / 'out'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "read 4 = written 2 + rejected 2" in " ".join(out.stdout.split())
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["line"], r["reason"]) for r in rejects) == [(2, "missing_field"), (3, "bad_json")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    out = cli("prepare", f"--input={bad}", f"--output_dir={tmp_path / 'bad_out'}")
    assert out.returncode != 0 and "rejects.jsonl" in out.stderr


def test_prepare_with_a_config_override_and_a_missing_file(tmp_path):
    out = cli(
        "prepare",
        f"--input={tmp_path / 'nope.jsonl'}",
        f"--output_dir={tmp_path / 'o'}",
        "--config.prepare.max_input_len=8",
    )
    assert out.returncode != 0 and "nope.jsonl" in out.stderr


def test_eval_job_writes_a_per_domain_report(small_train_config, demo_prepared, tmp_path):
    cfg = small_train_config(train__steps=4)
    train(cfg, str(tmp_path / "run"))
    report, table = evaluate_workdir(
        str(tmp_path / "run"),
        demo_prepared["test"],
        output_dir=str(tmp_path / "rep"),
        decode_examples_per_domain=2,
        max_examples_per_domain=4,
    )
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["step"] == report["step"] == 4
    assert set(saved["per_domain"]) == set(
        json.loads(open(os.path.join(demo_prepared["test"], "manifest.json")).read())["domains"]
    )
    assert saved["head"] and saved["tail"]
    for values in saved["per_domain"].values():
        assert values["count"] == 4 and values["decoded"] == 2
        assert 0.0 <= values["answer_accuracy"] <= values["answer_f1"] <= 1.0 and values["loss"] > 0
    assert "macro" in table and "tail" in table
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# Evaluation")


@pytest.mark.slow
def test_demo_end_to_end_prints_the_head_tail_table(tmp_path):
    out = cli(
        "demo",
        f"--workdir={tmp_path}",
        "--num_train=600",
        "--config.train.steps=30",
        "--config.train.log_every=10",
        "--config.eval.every=0",
        "--config.eval.decode_examples_per_domain=2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "head" in out.stdout and "tail" in out.stdout and "TensorBoard" in out.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["step"] == 30 and len(report["per_domain"]) == 10
