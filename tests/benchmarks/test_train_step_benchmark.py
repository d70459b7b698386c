"""Smoke test of benchmarks/train_step.py: every variant compiles and reports positive figures (no timing assertions)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


def load_benchmark():
    # benchmarks/ is a folder of scripts, not a package, so load the file itself.
    spec = importlib.util.spec_from_file_location("train_step_benchmark", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return benchmark


@pytest.mark.slow  # a smoke test of a benchmark script: CI's second step
def test_train_step_benchmark_reports_every_variant(tmp_path):
    benchmark = load_benchmark()
    out = tmp_path / "train_step.json"
    args = ["--size", "tiny", "--batch_size", "8", "--input_len", "16", "--target_len", "16"]
    args += ["--variants", "scan+remat=full+accum=2", "--mesh", "data=2,fsdp=2,tensor=2", "--json", str(out)]
    benchmark.main(args)

    report = json.loads(out.read_text())
    assert [row["variant"] for row in report["rows"]] == ["scan+remat=full+accum=2"]
    row = report["rows"][0]
    assert row["trace_lower_s"] > 0 and row["compile_s"] > 0
    assert row["memory_bytes"]["total"] > row["memory_bytes"]["temp"] > 0
    assert report["shapes"]["params"] > 0 and report["machine"]["cores"] > 0


def test_variant_syntax():
    parse = load_benchmark().parse_variant
    assert parse("plain") == {"remat": "none", "scan_layers": False, "grad_accum_steps": 1}
    assert parse("scan+remat=dots_saveable+accum=4") == {
        "remat": "dots_saveable",
        "scan_layers": True,
        "grad_accum_steps": 4,
    }
    with pytest.raises(ValueError, match="expected plain, scan"):
        parse("scan_layers")
