"""Smoke tests of the issue-8 suite: each script's smallest setting runs end to end and writes well-formed JSON.

No timing assertions: only that every figure is there, positive and consistent with the settings.
"""

import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def load(monkeypatch):
    """Imports a benchmark script by name (benchmarks/ is a folder of scripts that import each other)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def read_report(path: Path, part: str) -> dict:
    report = json.loads(path.read_text())
    assert {"command", "machine", "versions", part} <= report.keys()
    machine = report["machine"]
    assert machine["cores"] > 0 and machine["cpu"]
    assert len(machine["load_average_before"]) == len(machine["load_average_after"]) == 3
    assert {"python", "jax", "jaxlib", "flax", "torch", "transformers"} <= report["versions"].keys()
    return report[part]


@pytest.mark.slow  # a smoke test of a benchmark script: CI's second step
def test_train_vs_torch_smallest(load, tmp_path):
    out = tmp_path / "train.json"
    args = ["--sizes", "tiny", "--batch_size", "8", "--input_len", "16", "--target_len", "16"]
    load("train_vs_torch").main([*args, "--steps", "1", "--warmup", "0", "--probe_n", "256", "--json", str(out)])

    part = read_report(out, "train_vs_torch")
    assert part["matmul_probe"]["flops_per_s"] > 0 and part["peak_flops_per_device"] > 0
    assert part["torch_num_threads"] > 0
    (row,) = part["rows"]
    assert (row["size"], row["batch_size"], row["input_len"], row["target_len"]) == ("tiny", 8, 16, 16)
    assert row["first_step_loss"]["ours"] == pytest.approx(row["first_step_loss"]["torch"], abs=1e-3)
    for side in ("ours", "torch"):
        assert len(row[side]["step_times_s"]) == 1
        for key in ("step_s", "tokens_per_s", "model_tflops", "mfu", "pct_of_matmul_peak"):
            assert row[side][key] > 0, (side, key)
        assert row[side]["page_faults_per_step"] >= 0
        assert row[side]["tokens_per_s"] == pytest.approx(8 * 32 / row[side]["step_s"])
    assert row["ratio"] == pytest.approx(row["torch"]["step_s"] / row["ours"]["step_s"])


@pytest.mark.slow  # a smoke test of a benchmark script: CI's second step
def test_input_pipeline_smallest(load, tmp_path):
    out = tmp_path / "pipeline.json"
    args = ["--num_train", "400", "--batch_size", "8", "--batches", "2", "--steps", "1", "--warmup", "0"]
    load("input_pipeline").main([*args, "--json", str(out)])

    part = read_report(out, "input_pipeline")
    assert part["prepare"]["rows"] == 400 and part["prepare"]["rows_per_s"] > 0
    assert [row["pack"] for row in part["rows"]] == [False, True]
    for row in part["rows"]:
        for key in ("batches_per_s", "examples_per_batch", "token_fill", "step_s", "ratio", "fed_step_s"):
            assert row[key] > 0, (row["pack"], key)
        assert row["token_fill"] <= 1.0
        assert "sample_batch" not in row


@pytest.mark.slow  # a smoke test of a benchmark script: CI's second step
def test_checkpointing_smallest(load, tmp_path):
    out = tmp_path / "checkpointing.json"
    args = ["--sizes", "tiny", "--overhead_sizes", "tiny", "--overhead_steps", "3", "--every", "2", "--rounds", "1"]
    shape = ["--batch_size", "8", "--input_len", "16", "--target_len", "16"]
    load("checkpointing").main([*args, *shape, "--json", str(out)])

    part = read_report(out, "checkpointing")
    (saved,) = part["save_restore"]
    assert saved["size"] == "tiny" and saved["bytes"] > 0
    assert saved["first_save_s"] > 0 and saved["save_s"] > 0 and saved["restore_s"] > 0
    (over,) = part["overhead"]
    assert (over["steps"], over["every"], over["saves_per_run"]) == (3, 2, 1)
    assert len(over["never_s"]) == len(over["saving_s"]) == 1
    assert over["step_s"] > 0 and over["save_call_s"] > 0


@pytest.mark.slow  # a smoke test of a benchmark script: CI's second step
def test_scaling_smallest(load, tmp_path):
    """Sharded steps equal the one-device step (conftest gives this process 8 virtual devices)."""
    out = tmp_path / "scaling.json"
    args = ["--devices", "1,8", "--layouts", "data,fsdp", "--batch_size", "8", "--input_len", "16"]
    load("scaling").main([*args, "--target_len", "16", "--steps", "2", "--warmup", "0", "--json", str(out)])

    part = read_report(out, "scaling")
    rows = part["rows"]
    assert [(r["devices"], r["layout"]) for r in rows] == [
        (1, "data"),
        (8, "data"),
        (8, "fsdp"),
    ]
    assert len(part["reference_losses"]) == 2 and all(loss > 0 for loss in part["reference_losses"])
    for row in rows[1:]:
        assert row["max_loss_diff"] < 1e-4 and row["max_param_diff"] < 1e-5, row
    for row in rows:
        assert row["step_s"] > 0 and row["speedup"] == pytest.approx(rows[0]["step_s"] / row["step_s"])


@pytest.mark.slow
def test_run_all_smoke(load, tmp_path):
    out = tmp_path / "suite.json"
    report = load("run_all").main(["--smoke", "--size", "tiny", "--json", str(out)])

    written = json.loads(out.read_text())
    assert {"train_vs_torch", "input_pipeline", "checkpointing", "decode", "scaling"} <= written.keys()
    assert written["machine"]["load_average_after"] and written["command"]
    parts = {row["part"] for row in load("run_all").headline_rows(report)}
    assert parts == {"train step", "input pipeline", "prepare", "checkpointing", "decode", "scaling"}
