"""The issue-8 suite in one command: train step vs PyTorch, input pipeline, checkpointing, decoding, scaling.

    python benchmarks/run_all.py [--json suite.json]                        # CPU: a few minutes
    python benchmarks/run_all.py --size base --dtype bfloat16 --json base.json   # a GPU run

Without ``--size`` it runs the CPU suite: train step tiny and small, input pipeline with the tiny
consumer, save/restore tiny and small, async-save overhead tiny, decoding tiny, and scaling over
1-8 devices at tiny (a subprocess: on CPU it needs 8 virtual devices, which must be set before JAX
starts and would change every other part's figures). ``--size S`` runs everything at S. Each part prints its own table as it finishes; at the end one table lists every
headline figure against its issue-8 target, and ``--json`` gets every part's full report under
one header (command, machine with the load average before and after, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import checkpointing
import decode
import harness
import input_pipeline
import jax
import train_vs_torch

from distill_jax.process_env import reexec_with_malloc_tuning

PARTS = ("train", "pipeline", "checkpoint", "decode", "scaling")
TRAIN_TARGETS = {"tiny": 2.0, "small": 1.5}  # ours/torch tokens/s.
PIPELINE_TARGET = 5.0  # Loader batches/s over the step's.
CHECKPOINT_TARGET_PCT = 3.0  # Async-save overhead, % of step time.
DECODE_TARGET = 3.0  # Ours/generate tokens/s.


def run_parts(size: str | None, dtype: str, parts: Sequence[str], smoke: bool, workdir: str) -> dict[str, Any]:
    """Every selected part's report. ``smoke``: the smallest settings (checks the wiring; figures are meaningless)."""
    sizes = [size] if size else ["tiny", "small"]
    first = sizes[0]
    out: dict[str, Any] = {}
    if "train" in parts:
        overrides = dict(batch_size=8, input_len=16, target_len=16, steps=1) if smoke else {}
        probe_n = 256 if smoke else (2048 if jax.default_backend() == "cpu" else 8192)
        out["train_vs_torch"] = train_vs_torch.run(sizes, overrides, 0 if smoke else 2, dtype, 0.0, probe_n)
        print(train_vs_torch.summary(out["train_vs_torch"]), flush=True)
    if "pipeline" in parts:
        counts = dict(num_train=400, batches=2, steps=1, warmup=0, batch_size=8) if smoke else {}
        args = dict(num_train=6000, batches=60, steps=20, warmup=2) | counts
        out["input_pipeline"] = input_pipeline.run(first, workdir=os.path.join(workdir, "pipeline"), **args)
        print(input_pipeline.summary(out["input_pipeline"]), flush=True)
    if "checkpoint" in parts:
        steps, every, rounds = (3, 2, 1) if smoke else (40, 10, 2)
        shape = dict(batch_size=8, input_len=16, target_len=16) if smoke else {}
        out["checkpointing"] = checkpointing.run(sizes, [first], steps, every, rounds, workdir, shape)
        print(checkpointing.summary(out["checkpointing"]), flush=True)
    if "decode" in parts:
        batch_sizes, tokens, repeats = ([1], 3, 1) if smoke else ([1, 64], 32, 3)
        print("decode: method, batch, ours tok/s, generate tok/s, ours/generate, ours compile s", flush=True)
        out["decode"] = decode.run(first, batch_sizes, tokens, repeats)
    if "scaling" in parts:
        shape = ["--batch_size", "8", "--input_len", "16", "--target_len", "16", "--steps", "1"] if smoke else []
        path = os.path.join(workdir, "scaling.json")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling.py")
        subprocess.run([sys.executable, script, "--size", first, *shape, "--json", path], check=True)
        with open(path) as f:
            out["scaling"] = json.load(f)["scaling"]
    return out


def _ratio_row(part: str, setting: str, metric: str, ours: str, ref: str, ratio: float, target: float | None) -> dict:
    return dict(
        part=part,
        setting=setting,
        metric=metric,
        ours=ours,
        reference=ref,
        ratio=f"{ratio:.2f}x",
        target=f">= {target:g}x" if target else "",
        met=("yes" if ratio >= target else "NO") if target else "",
    )


def headline_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per headline figure, with its target and whether this run met it."""
    rows = []
    for r in report.get("train_vs_torch", {}).get("rows", []):
        setting = f"{r['size']} b{r['batch_size']} {r['input_len']}/{r['target_len']} {r['dtype']}"
        ours, torch_ = r["ours"], r["torch"]
        rows.append(
            _ratio_row(
                "train step",
                setting,
                "tokens/s (vs torch)",
                f"{ours['tokens_per_s']:,.0f}",
                f"{torch_['tokens_per_s']:,.0f}",
                r["ratio"],
                TRAIN_TARGETS.get(r["size"]),
            )
        )
        peak = f"{ours['pct_of_matmul_peak']:.0f}% / MFU {ours['mfu']:.1%}"
        torch_peak = f"{torch_['pct_of_matmul_peak']:.0f}% / MFU {torch_['mfu']:.1%}"
        rows.append(
            dict(part="train step", setting=setting, metric="% matmul peak / MFU", ours=peak, reference=torch_peak)
        )
    pipeline = report.get("input_pipeline")
    if pipeline:
        for r in pipeline["rows"]:
            layout = "packed" if r["pack"] else "padded"
            setting = f"{layout}, {pipeline['consumer']['size']} step b{pipeline['consumer']['batch_size']}"
            loader, step_rate = f"{r['batches_per_s']:,.1f}", f"{r['consumed_batches_per_s']:,.1f}"
            rows.append(
                _ratio_row(
                    "input pipeline", setting, "batches/s (vs step)", loader, step_rate, r["ratio"], PIPELINE_TARGET
                )
            )
        prepare = pipeline["prepare"]
        rows.append(
            dict(
                part="prepare",
                setting=f"demo corpus, {prepare['rows']} rows",
                metric="rows/s",
                ours=f"{prepare['rows_per_s']:,.0f}",
            )
        )
    ckpt = report.get("checkpointing")
    if ckpt:
        for r in ckpt["overhead"]:
            met = "yes" if r["overhead_pct"] < CHECKPOINT_TARGET_PCT else "NO"
            rows.append(
                dict(
                    part="checkpointing",
                    setting=f"{r['size']}, save every {r['every']} of {r['steps']} steps",
                    metric="async-save overhead",
                    ours=f"{r['overhead_pct']:.1f}%",
                    reference=f"{r['overhead_pct_at_default_every']:.2f}% at every {r['default_every']}",
                    target=f"< {CHECKPOINT_TARGET_PCT:g}%",
                    met=met,
                )
            )
        for r in ckpt["save_restore"]:
            rows.append(
                dict(
                    part="checkpointing",
                    setting=f"{r['size']}, {r['bytes'] / 2**20:,.0f} MiB",
                    metric="save / restore s",
                    ours=f"{r['save_s']:.2f} / {r['restore_s']:.2f}",
                )
            )
    for r in report.get("decode", {}).get("rows", []):
        rows.append(
            _ratio_row(
                "decode",
                f"{r['method']} b{r['batch_size']}",
                "tokens/s (vs generate)",
                f"{r['ours_tokens_per_s']:,.0f}",
                f"{r['hf_tokens_per_s']:,.0f}",
                r["ratio"],
                DECODE_TARGET,
            )
        )
    for r in report.get("scaling", {}).get("rows", []):
        diffs = "" if r["devices"] == 1 else f"; loss/param diff {r['max_loss_diff']:.0e}/{r['max_param_diff']:.0e}"
        rows.append(
            dict(
                part="scaling",
                setting=f"{r['devices']} dev, {r['layout']} {r['mesh']}",
                metric="tokens/s (vs 1 device)",
                ours=f"{r['tokens_per_s']:,.0f}",
                reference=f"x{r['speedup']:.2f}{diffs}",
            )
        )
    return rows


COLUMNS = tuple(
    (name.replace("_", " "), name, "s")
    for name in ("part", "setting", "metric", "ours", "reference", "ratio", "target", "met")
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses ``argv``, runs the selected parts, prints the headline table and writes ``--json`` if given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=tuple(harness.PRESETS), help="run every part at this size")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="train-step compute dtype")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {','.join(PARTS)}")
    parser.add_argument("--smoke", action="store_true", help="smallest settings: checks the wiring only")
    parser.add_argument("--json", help="also write the full report here")
    args = parser.parse_args(argv)
    skip = {p for p in args.skip.split(",") if p}
    if skip - set(PARTS):
        parser.error(f"--skip: unknown parts {sorted(skip - set(PARTS))}; choose from {PARTS}")
    report = harness.report_header(argv)
    with tempfile.TemporaryDirectory(prefix="bench_suite_") as workdir:
        parts = [p for p in PARTS if p not in skip]
        report.update(run_parts(args.size, args.dtype, parts, args.smoke, workdir))
    harness.finish(report, args.json)
    print(harness.format_table(COLUMNS, headline_rows(report)))
    print(
        f"load average before {report['machine']['load_average_before']}, after {report['machine']['load_average_after']}"
    )
    return report


if __name__ == "__main__":
    reexec_with_malloc_tuning(sys.argv)  # The figures are measured as the CLI runs: with its allocator setting.
    main(sys.argv[1:])
