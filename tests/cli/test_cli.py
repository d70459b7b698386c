"""The command line: dispatch, prepare's console contract, eval reports, and the demo end to end."""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, cli

from distill_jax.cli.main import SUBCOMMANDS, module_of
from distill_jax.distill.evaluate_runs import evaluate_workdir
from distill_jax.training.trainer import train


def test_usage_and_unknown_subcommand():
    out = cli()
    assert out.returncode == 2 and "prepare" in out.stdout and "demo" in out.stdout
    out = cli("bogus")
    assert out.returncode == 2 and "unknown subcommand 'bogus'" in out.stderr


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_help_exits_0_with_its_own_flags(name):
    out = cli(name, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    doc, own = _doc_and_own_flags(module_of(name))
    assert out.stdout.startswith(doc.strip().splitlines()[0])
    shown = out.stdout.replace("--[no]", "--")  # absl writes a boolean flag as --[no]name
    assert own and all(f"--{flag}:" in shown for flag in own), (own, out.stdout[-2000:])
    assert "dispatches to one subcommand module" not in out.stdout


def _doc_and_own_flags(module_name):
    """The docstring and the flags a fresh import of the subcommand module defines in that module."""
    code = (
        "import importlib, json, sys; from absl import flags; m = importlib.import_module(sys.argv[1]); "
        "print(json.dumps([m.__doc__, [n for n in flags.FLAGS if flags.FLAGS.find_module_defining_flag(n) == m.__name__]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, module_name], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout)


def test_helpfull_exits_0_and_lists_absl_flags_too():
    out = cli("train", "--helpfull")
    assert out.returncode == 0 and "--workdir" in out.stdout and "--verbosity" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("--config.train.stesp=5", "--config.train.stesp: no config field 'stesp'. Did you mean \"steps\""),
        ("--config.train.steps=abc", "--config.train.steps=abc: invalid literal for int()"),
        ("--config=configs/no_such_file.py", "--config=configs/no_such_file.py: "),
        ("--config.mesh.data=3", "mesh: data*fsdp*tensor = 3*1*1 = 3 but there are 1 devices"),
    ],
)
def test_config_mistakes_are_one_line_naming_the_field_exit_2(demo_prepared, tmp_path, flag, expected):
    workdir = tmp_path / "w"
    args = ("train", flag, f"--workdir={workdir}", f"--config.data.train_dir={demo_prepared['train']}")
    out = cli(*args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert lines[-1].startswith("distill-jax train: ") and expected in lines[-1], lines[-1]
    assert not workdir.exists()
    verbose = cli(*args, "--verbosity=1")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and expected in verbose.stderr


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


def test_prepare_headerless_csv_files_as_domains_from_the_command_line(tmp_path):
    # A subject-per-file multiple-choice set: no header, no domain column, the same row in two files.
    rows = "Shared question?,w,x,y,z,A\nWhat is 1+1?,1,2,3,4,B\n"
    for subject in ("abstract_algebra_test", "anatomy_test"):
        (tmp_path / f"{subject}.csv").write_text(rows)
    out = cli(
        "prepare",
        f"--input={tmp_path / 'abstract_algebra_test.csv'},{tmp_path / 'anatomy_test.csv'}",
        f"--output_dir={tmp_path / 'out'}",
        "--config.prepare.columns=question,A,B,C,D,answer",
        "--config.prepare.fields.domain={_file_stem}",
        "--config.prepare.fields.id=",
        "--config.prepare.fields.input={question} (A) {A} (B) {B} (C) {C} (D) {D}",
        "--config.prepare.fields.target=answer",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "read 4 = written 4 + rejected 0" in " ".join(out.stdout.split())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {d: v["num_examples"] for d, v in manifest["domains"].items()} == {
        "abstract_algebra_test": 2,
        "anatomy_test": 2,
    }


def test_train_refuses_a_bad_config_in_one_line_and_creates_nothing(demo_prepared, tmp_path):
    workdir = tmp_path / "w"
    out = cli(
        "train",
        "--config=distill_jax/presets.py:demo",
        f"--workdir={workdir}",
        f"--config.data.train_dir={demo_prepared['train']}",
        "--config.train.steps=-5",
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("distill-jax train: invalid train config: train.steps=-5")
    assert not workdir.exists()


def test_a_diverging_train_exits_nonzero_in_one_line(demo_prepared, tmp_path):
    # Before: exit 0 with loss=nan on the bar and 130 lines of tensorboardX "NaN or Inf found in input tensor".
    out = cli(
        "train",
        "--config=distill_jax/presets.py:demo",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data.train_dir={demo_prepared['train']}",
        "--config.data.max_input_len=64",
        "--config.data.max_target_len=96",
        "--config.train.batch_size=8",
        "--config.train.steps=40",
        "--config.train.log_every=4",
        "--config.train.checkpoint_every=4",
        "--config.eval.every=0",
        "--config.optimizer.learning_rate=1e30",
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("distill-jax train: non-finite") and "Last finite checkpoint:" in last, last
    assert "NaN or Inf" not in out.stderr


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
def test_single_student_demo_prints_the_head_tail_table(tmp_path):
    out = cli(
        "demo",
        f"--workdir={tmp_path}",
        "--single_student",
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
