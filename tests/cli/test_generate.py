"""The generate job (chunked, resumable, sharded over processes) and the eval job over prediction sets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

from distill_jax.evaluation import generate as generate_lib
from distill_jax.evaluation.compare import compare_predictions
from distill_jax.evaluation.generate import DecodeSettings, generate
from distill_jax.evaluation.scoring import ScoringOptions
from distill_jax.training.trainer import train

SAMPLE = DecodeSettings(method="sample", temperature=0.9, top_k=20, num_return_sequences=2, seed=3)
_TRAINED: dict[str, str] = {}


@pytest.fixture
def workdir(small_train_config, tmp_path_factory) -> str:
    """A 4-step tiny student, trained once for this module."""
    if "run" not in _TRAINED:
        run = tmp_path_factory.mktemp("student") / "run"
        train(small_train_config(train__steps=4), str(run))
        _TRAINED["run"] = str(run)
    return _TRAINED["run"]


def _test_ids(prepared: str) -> list[str]:
    from distill_jax.data import shards

    return sorted(e["id"] for s in shards.open_domain_sources(prepared).values() for e in s)


def _corpus_file(demo_prepared) -> str:
    return str(Path(demo_prepared["test"]).parents[1] / "corpus" / "test.jsonl")


def _lines(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_generate_writes_chunks_then_predictions_ordered_by_id(workdir, demo_prepared, tmp_path) -> None:
    out = str(tmp_path / "gen")
    summary = generate(workdir, demo_prepared["test"], out, chunk_size=16, progress=False)
    rows = _lines(os.path.join(out, "predictions.jsonl"))
    assert [r["id"] for r in rows] == _test_ids(demo_prepared["test"])  # every example once, ordered by id
    assert {"domain", "input", "reference", "prediction"} <= set(rows[0]) and "predictions" not in rows[0]
    assert sorted(os.listdir(os.path.join(out, "chunks"))) == [f"chunk_{i:06d}.jsonl" for i in range(5)]  # 80 / 16
    assert summary["step"] == 4 and summary["params"] > 0 and summary["num_examples"] == 80
    assert summary["chunks"] == {"total": 5, "already_done": 0, "decoded": 5}
    t = summary["throughput"]
    assert t["examples_decoded"] == 80 and t["devices"] == 8 and t["examples_per_s"] > 0
    assert 80 <= t["generated_tokens"] <= 80 * summary["decoding"]["max_decode_len"]
    assert json.loads(Path(out, "summary.json").read_text())["throughput"]["generated_tokens"] == t["generated_tokens"]
    assert "examples/s" in generate_lib.format_summary(summary)
    # Run again: everything is done, nothing is decoded, the file is unchanged.
    before = Path(out, "predictions.jsonl").read_bytes()
    again = generate(workdir, demo_prepared["test"], out, chunk_size=16, progress=False)
    assert again["chunks"]["decoded"] == 0 and Path(out, "predictions.jsonl").read_bytes() == before
    # Another job's settings in the same directory are refused (its chunks would mix), unless overwriting.
    with pytest.raises(ValueError, match="different job"):
        generate(workdir, demo_prepared["test"], out, SAMPLE, chunk_size=16, progress=False)
    fresh = generate(workdir, demo_prepared["test"], out, chunk_size=16, overwrite=True, progress=False)
    assert fresh["chunks"]["decoded"] == 5 and Path(out, "predictions.jsonl").read_bytes() == before


def test_a_job_killed_mid_way_resumes_to_the_same_file(workdir, demo_prepared, tmp_path, monkeypatch) -> None:
    data = demo_prepared["test"]
    whole = str(tmp_path / "whole")
    generate(workdir, data, whole, SAMPLE, chunk_size=16, progress=False)

    real_write, written = generate_lib._write_chunk, []

    def dies_after_two_chunks(path, rows):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        real_write(path, rows)
        written.append(path)

    monkeypatch.setattr(generate_lib, "_write_chunk", dies_after_two_chunks)
    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        generate(workdir, data, out, SAMPLE, chunk_size=16, progress=False)
    assert len(os.listdir(os.path.join(out, "chunks"))) == 2 and not os.path.exists(
        os.path.join(out, "predictions.jsonl")
    )
    monkeypatch.setattr(generate_lib, "_write_chunk", real_write)
    summary = generate(workdir, data, out, SAMPLE, chunk_size=16, progress=False)
    assert summary["chunks"] == {"total": 5, "already_done": 2, "decoded": 3}
    merged = Path(out, "predictions.jsonl").read_bytes()
    assert merged == Path(whole, "predictions.jsonl").read_bytes()
    rows = _lines(os.path.join(out, "predictions.jsonl"))
    assert len({r["id"] for r in rows}) == len(rows) == 80
    assert all(len(r["predictions"]) == 2 and r["prediction"] == r["predictions"][0] for r in rows)


def test_a_data_file_decodes_like_its_prepared_shards(workdir, demo_prepared, tmp_path) -> None:
    beam = DecodeSettings(method="beam", num_beams=2, num_return_sequences=2)
    from_file = generate(workdir, _corpus_file(demo_prepared), str(tmp_path / "f"), beam, batch_size=32, progress=False)
    from_shards = generate(workdir, demo_prepared["test"], str(tmp_path / "s"), beam, batch_size=32, progress=False)
    assert from_file["num_examples"] == from_shards["num_examples"] == 80
    file_rows = {r["id"]: r for r in _lines(from_file["predictions"])}
    shard_rows = {r["id"]: r for r in _lines(from_shards["predictions"])}
    assert file_rows == shard_rows  # same inputs, references (formatted by the same template) and beams


def test_eval_compares_a_checkpoint_with_the_teachers_outputs(workdir, demo_prepared, tmp_path) -> None:
    corpus = _corpus_file(demo_prepared)
    teacher = tmp_path / "teacher.jsonl"
    with open(teacher, "w") as f:
        for row in _lines(corpus):  # the teacher wrote the corpus: its outputs are the references (demo: answers)
            f.write(json.dumps({"id": row["id"], "prediction": row["target"]}))
            f.write("\n")
    out = str(tmp_path / "eval")
    report, table = compare_predictions(
        [("student", workdir), ("teacher", str(teacher))],
        out,
        data=corpus,
        options=ScoringOptions(groups=("answer", "overlap")),
        param_counts={"teacher": 7e9},
    )
    student, teacher_set = report["sets"]["student"], report["sets"]["teacher"]
    assert teacher_set["aggregates"]["macro"]["answer_accuracy"] == 1.0
    # chrF, not BLEU: the demo's one-byte answers have no 4-grams, so even identical ones score BLEU 0.
    assert teacher_set["aggregates"]["micro"]["chrf"] == pytest.approx(100.0)
    assert student["step"] == 4 and student["params"] < 1e7 and teacher_set["params"] == 7e9
    assert report["ratios"]["student"]["params"] == pytest.approx(student["params"] / 7e9)
    assert report["ratios"]["student"]["macro"]["answer_accuracy"] == student["aggregates"]["macro"]["answer_accuracy"]
    assert report["teacher"] == "teacher" and report["head"] and report["tail"]
    assert report["head_tail_from"] == demo_prepared["train"]  # the student's training manifest
    assert set(os.listdir(out)) >= {"report.json", "report.md", "plots", "predictions"}
    assert os.path.exists(os.path.join(out, "predictions", "student", "predictions.jsonl"))
    assert "student/teacher" in table


def _cli(*args: str, devices: int = 8, **kw) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, "-m", "distill_jax.cli.main", *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def test_cli_generate_then_eval_of_its_predictions(workdir, demo_prepared, tmp_path) -> None:
    out, report = str(tmp_path / "gen"), str(tmp_path / "report")
    stdout = _finish(
        _cli(
            "generate",
            f"--checkpoint={workdir}/checkpoints/4",
            f"--data={demo_prepared['test']}",
            f"--output_dir={out}",
        )
    )
    assert "examples/s" in stdout and "generated tokens/s per device" in stdout and "(step 4," in stdout
    stdout = _finish(
        _cli("eval", f"--predictions={out}/predictions.jsonl", f"--output_dir={report}", "--metrics=answer")
    )
    saved = json.loads(Path(report, "report.json").read_text())
    assert saved["sets"]["predictions"]["step"] == 4  # read from the summary.json beside the predictions
    assert "answer_accuracy" in stdout and "predictions" in stdout


@pytest.mark.slow
def test_kill_dash_nine_mid_job_then_rerun_gives_the_uninterrupted_file(workdir, demo_prepared, tmp_path) -> None:
    args = [f"--data={demo_prepared['train']}", "--decoding=beam", "--num_beams=4", "--max_decode_len=48"]
    args += ["--batch_size=16", "--chunk_size=16"]
    whole = str(tmp_path / "whole")
    generate(
        workdir,
        demo_prepared["train"],
        whole,
        DecodeSettings(method="beam", max_decode_len=48),
        batch_size=16,
        chunk_size=16,
        progress=False,
    )
    out = tmp_path / "killed"
    process = _cli("generate", f"--checkpoint={workdir}", f"--output_dir={out}", *args)
    deadline = time.time() + 240
    while (
        time.time() < deadline
        and len(list((out / "chunks").glob("chunk_*.jsonl")) if (out / "chunks").exists() else []) < 3
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    done = len(list((out / "chunks").glob("chunk_*.jsonl")))
    assert 3 <= done < 50 and not (out / "predictions.jsonl").exists()
    stdout = _finish(_cli("generate", f"--checkpoint={workdir}", f"--output_dir={out}", *args))
    assert f"{done} already done" in stdout
    assert (out / "predictions.jsonl").read_bytes() == Path(whole, "predictions.jsonl").read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "decoding", [["--decoding=greedy"], ["--decoding=sample", "--num_return_sequences=2", "--top_p=0.9"]]
)
def test_two_processes_write_the_predictions_of_one(workdir, demo_prepared, tmp_path, decoding) -> None:
    args = [f"--checkpoint={workdir}", f"--data={demo_prepared['test']}", "--chunk_size=32", *decoding]
    _finish(_cli("generate", f"--output_dir={tmp_path / 'one'}", *args))
    launch = [os.path.join(REPO, "launch", "local.sh"), "-n", "2", "-d", "4", "-p", str(_free_port()), "--"]
    command = [
        *launch,
        sys.executable,
        "-m",
        "distill_jax.cli.main",
        "generate",
        f"--output_dir={tmp_path / 'two'}",
        *args,
    ]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "process 1 of 2" in out.stderr and "2 processes" in out.stdout
    one = (tmp_path / "one" / "predictions.jsonl").read_bytes()
    assert (tmp_path / "two" / "predictions.jsonl").read_bytes() == one and one.count(b"\n") == 80


def test_cli_eval_of_a_workdir_on_a_data_file_decodes_then_scores(workdir, demo_prepared, tmp_path) -> None:
    out = tmp_path / "eval"
    stdout = _finish(
        _cli("eval", f"--workdir={workdir}", f"--data={_corpus_file(demo_prepared)}", f"--output_dir={out}")
    )
    report = json.loads((out / "report.json").read_text())
    assert report["order"] == ["student"] and report["sets"]["student"]["step"] == 4
    assert report["config"]["run"]["train"]["steps"] == 4 and "answer_accuracy" in stdout
    assert (out / "predictions" / "student" / "predictions.jsonl").exists()
    assert sorted(os.listdir(out / "plots")) == ["domain_accuracy.png", "groups.png"]


def test_eval_decodes_a_checkpoint_once_per_preset(workdir, demo_prepared, tmp_path) -> None:
    """--presets: one set per preset, each decoded with its own settings and carrying its throughput."""
    out = tmp_path / "presets"
    report, table = compare_predictions(
        [("student", workdir)],
        str(out),
        data=demo_prepared["test"],
        options=ScoringOptions(groups=("overlap",)),
        settings=DecodeSettings(max_decode_len=8),
        presets=["greedy", "topk10_n5"],
    )
    assert report["order"] == ["student@greedy", "student@topk10_n5"]
    sampled = report["sets"]["student@topk10_n5"]
    assert sampled["decoding"]["method"] == "sample" and sampled["decoding"]["num_return_sequences"] == 5
    assert sampled["decoding"]["max_decode_len"] == 8
    assert all(report["sets"][n]["examples_per_s"] > 0 for n in report["order"])
    rows = [json.loads(line) for line in (out / "predictions" / "student@topk10_n5" / "predictions.jsonl").open()]
    assert all(len(r["predictions"]) == 5 for r in rows)
    assert "student@greedy" in table
