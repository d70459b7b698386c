"""Smoke test of benchmarks/decode.py: the report is complete and positive (no timing assertions)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode.py"


def test_decode_benchmark_reports_every_row(tmp_path, monkeypatch):
    # benchmarks/ is a folder of scripts that import each other (workload_bound), not a package.
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("decode_benchmark", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "decode.json"
    benchmark.main(["--batch_sizes", "1", "--max_new_tokens", "3", "--repeats", "1", "--json", str(out)])

    report = json.loads(out.read_text())
    assert [(row["method"], row["batch_size"]) for row in report["rows"]] == [(m, 1) for m in benchmark.METHODS]
    for row in report["rows"]:
        assert row["generated_tokens"] == 3
        for key in ("ours_compile_s", "ours_s", "hf_s", "ours_tokens_per_s", "hf_tokens_per_s", "ratio", "bound_s"):
            assert row[key] > 0, (row["method"], key)
    machine = report["machine"]
    assert machine["cores"] > 0 and machine["torch_num_threads"] > 0 and machine["cpu"]
    assert {"jax", "torch", "transformers"} <= machine.keys()
