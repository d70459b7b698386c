"""Train-step throughput: this project's jitted step against the PyTorch loop a ``Seq2SeqTrainer`` runs.

Same T5 config, batch, sequence lengths, synthetic tokens, device and process. Ours is the step
``trainer.train`` builds (default config: AdamW, global-norm clipping 1.0, z-loss 1e-4; state and
metric sums donated; compiled ahead of time). The other is ``transformers``
``T5ForConditionalGeneration`` with ``torch.optim.AdamW(fused=True)`` (the Trainer's default
``adamw_torch_fused``) and the Trainer's loop: forward with labels, backward, clip grad norm,
optimizer step, LR-scheduler step, zero_grad. Torch starts from our initial weights, exported with
``distill_jax.models.hf_t5``; the first step's cross-entropy must agree or the script raises.

    python benchmarks/train_vs_torch.py [--sizes tiny,small] [--batch_size B --input_len S --target_len T]
        [--steps N] [--warmup W] [--dtype float32|bfloat16] [--json OUT.json]

Figures: median step time over N steps after W warm-up steps (each framework in its own block),
tokens/s = batch x (S + T) / step time (every row is full, so all are real tokens), model FLOP/s =
``t5_config.flops_per_token`` x target tokens/s, and that divided by the peak: MFU (peak from
``interval_scalars.PEAK_FLOPS_BY_DEVICE_KIND`` on accelerators, the matmul probe on CPU) and % of the
probe's measured matmul peak (always), and the workload's own bound (``workload_bound.py``: this step's
matmul shapes, each timed alone) with each side's fraction of it. Also the process's minor page faults per step of each side:
memory the allocator hands back to the kernel and faults in again every step is a CPU cost of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import harness
import jax
import numpy as np
import torch
import transformers
import workload_bound

from distill_jax.config import default_config
from distill_jax.models.family import save_hf
from distill_jax.models.t5_config import T5Config, flops_per_token, get_config, num_params
from distill_jax.process_env import reexec_with_malloc_tuning

# First-step cross-entropy agreement: float32 sides differ only by summation order.
LOSS_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}


def torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_model(model_config: T5Config, params: Any) -> transformers.T5ForConditionalGeneration:
    """Our parameters as a transformers model, through the project's HF export (safetensors + config.json)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "hf")
        save_hf(out, model_config, jax.tree.map(np.asarray, params), tokenizer_dir=None)
        model = transformers.T5ForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    return model.to(torch_device()).train()


class TorchLoop:
    """One Seq2SeqTrainer training step per call, with the Trainer's default fused AdamW and decay grouping."""

    def __init__(self, model: transformers.T5ForConditionalGeneration, config: Any, dtype: str):
        opt = config.optimizer
        # Trainer.get_decay_parameter_names: no weight decay on norms (our optimizer masks 1-D leaves).
        decay = [p for n, p in model.named_parameters() if "norm" not in n]
        no_decay = [p for n, p in model.named_parameters() if "norm" in n]
        self.model = model
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=opt.learning_rate,
            betas=(opt.b1, opt.b2),
            fused=True,
        )
        self.scheduler = transformers.get_cosine_schedule_with_warmup(
            self.optimizer, opt.warmup_steps, config.train.steps
        )
        self.clip = opt.grad_clip_norm
        self.autocast = torch.autocast(torch_device().type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        with self.autocast:
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # .item() also waits for a GPU to finish


def torch_batch(host: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The same rows as HF's forward arguments; full rows, so the masks are all ones."""
    device = torch_device()
    return dict(
        input_ids=torch.from_numpy(host["encoder_input_tokens"]).long().to(device),
        attention_mask=torch.from_numpy(host["encoder_segment_ids"] > 0).long().to(device),
        labels=torch.from_numpy(host["decoder_target_tokens"]).long().to(device),
    )


def _throughput(
    step_s: float, preset: harness.Preset, model_config: T5Config, peak: float, probe: float, bound_s: float
) -> dict[str, float]:
    target_tokens_per_s = preset.batch_size * preset.target_len / step_s
    model_flops = flops_per_token(model_config, preset.input_len, preset.target_len) * target_tokens_per_s
    return dict(
        step_s=step_s,
        tokens_per_s=preset.batch_size * (preset.input_len + preset.target_len) / step_s,
        model_tflops=model_flops / 1e12,
        mfu=model_flops / (peak * jax.device_count()),
        pct_of_matmul_peak=100 * model_flops / (probe * jax.device_count()),
        pct_of_bound=100 * bound_s / step_s,
    )


def measure_size(
    size: str,
    preset: harness.Preset,
    warmup: int,
    dtype: str,
    dropout: float,
    probe: float,
    peak: float,
    dropout_prng: str = "threefry2x32",
) -> dict[str, Any]:
    """Builds both sides from the same initial weights, checks the first-step loss, then times both."""
    config = default_config()
    config.model.size, config.model.dtype, config.model.dropout_rate = size, dtype, dropout
    config.train.dropout_prng = dropout_prng
    model_config = get_config(size, dtype=dtype, dropout_rate=dropout)
    batches = [
        harness.synthetic_batch(preset.batch_size, preset.input_len, preset.target_len, model_config.vocab_size, s)
        for s in range(min(preset.steps, 4))
    ]

    start = time.perf_counter()
    ours, state = harness.build_trainer_step(
        model_config, config, preset.batch_size, preset.input_len, preset.target_len, num_domains=1
    )
    compile_s = time.perf_counter() - start
    loop = TorchLoop(torch_model(model_config, state.params), config, dtype)

    device_batches = [ours.to_device(b) for b in batches]
    state, sums = ours.compiled(state, ours.fresh_sums(), device_batches[0])
    ours_loss = float(sums["ce_sum"].sum() / sums["token_count"].sum())
    torch_batches = [torch_batch(b) for b in batches]
    torch_loss = loop(torch_batches[0])
    # With dropout the two sides draw different masks: the losses agree only as the masks' statistics do.
    tolerance = LOSS_TOLERANCE[dtype] if dropout == 0 else max(LOSS_TOLERANCE[dtype], 2e-2)
    if not abs(ours_loss - torch_loss) <= tolerance * max(1.0, abs(torch_loss)):
        raise RuntimeError(f"{size}: first-step loss differs, ours {ours_loss:.6f} vs torch {torch_loss:.6f}")

    calls = iter(range(1, 1 << 30))

    def ours_step() -> None:
        nonlocal state, sums
        state, sums = ours.compiled(state, sums, device_batches[next(calls) % len(device_batches)])
        jax.block_until_ready((state, sums))

    # Timed before either side runs so neither's allocations or threads are in the probe.
    bound = workload_bound.bound(
        workload_bound.train_step_matmuls(model_config, preset.batch_size, preset.input_len, preset.target_len), dtype
    )
    faults = [harness.page_faults()]
    ours_times = harness.timed_calls(ours_step, warmup, preset.steps)
    faults.append(harness.page_faults())
    torch_times = harness.timed_calls(
        lambda: loop(torch_batches[next(calls) % len(torch_batches)]), warmup, preset.steps
    )
    faults.append(harness.page_faults())
    ours_row = _throughput(harness.median(ours_times), preset, model_config, peak, probe, bound["bound_s"])
    torch_row = _throughput(harness.median(torch_times), preset, model_config, peak, probe, bound["bound_s"])
    ours_row["page_faults_per_step"] = (faults[1] - faults[0]) / (warmup + preset.steps)
    torch_row["page_faults_per_step"] = (faults[2] - faults[1]) / (warmup + preset.steps)
    return dict(
        size=size,
        num_params=num_params(model_config),
        **dataclasses.asdict(preset),
        dtype=dtype,
        dropout=dropout,
        dropout_prng=dropout_prng,
        first_step_loss=dict(ours=ours_loss, torch=torch_loss),
        workload_bound=bound,
        ours_compile_s=compile_s,
        ours={**ours_row, "step_times_s": ours_times},
        torch={**torch_row, "step_times_s": torch_times},
        ratio=torch_row["step_s"] / ours_row["step_s"],
        hf_attn_implementation=loop.model.config._attn_implementation,
    )


COLUMNS = (
    ("size", "size", "s"),
    ("batch", "batch_size", "d"),
    ("in/out len", "lengths", "s"),
    ("ours s/step", "ours_step_s", ".3f"),
    ("torch s/step", "torch_step_s", ".3f"),
    ("ours tok/s", "ours_tokens_per_s", ",.0f"),
    ("torch tok/s", "torch_tokens_per_s", ",.0f"),
    ("ours/torch", "ratio", ".2f"),
    ("ours MFU", "ours_mfu", ".1%"),
    ("torch MFU", "torch_mfu", ".1%"),
    ("bound s/step", "bound_s", ".3f"),
    ("ours %bound", "ours_pct_of_bound", ".0f"),
    ("torch %bound", "torch_pct_of_bound", ".0f"),
    ("ours %peak", "ours_pct_of_matmul_peak", ".0f"),
    ("torch %peak", "torch_pct_of_matmul_peak", ".0f"),
    ("ours faults/step", "ours_page_faults_per_step", ",.0f"),
    ("torch faults/step", "torch_page_faults_per_step", ",.0f"),
)


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flattens each size's report into the table's columns."""
    out = []
    for r in rows:
        flat = {k: r[k] for k in ("size", "batch_size", "ratio")}
        flat["lengths"] = f"{r['input_len']}/{r['target_len']}"
        flat["bound_s"] = r["workload_bound"]["bound_s"]
        for side in ("ours", "torch"):
            flat.update({f"{side}_{k}": v for k, v in r[side].items()})
        out.append(flat)
    return out


def run(
    sizes: Sequence[str],
    overrides: dict[str, int],
    warmup: int,
    dtype: str,
    dropout: float,
    probe_n: int,
    dropout_prng: str = "threefry2x32",
) -> dict[str, Any]:
    """Every size's comparison plus the probe and peak they are measured against (no header)."""
    torch.set_num_threads(os.cpu_count() or 1)
    probe = harness.matmul_peak_flops(probe_n, dtype)
    peak, peak_source = harness.peak_flops(probe)
    rows = []
    for size in sizes:
        preset = dataclasses.replace(harness.PRESETS[size], **overrides)
        rows.append(measure_size(size, preset, warmup, dtype, dropout, probe, peak, dropout_prng))
    return dict(
        matmul_probe=dict(n=probe_n, dtype=dtype, flops_per_s=probe),
        peak_flops_per_device=peak,
        peak_source=peak_source,
        torch_device=str(torch_device()),
        torch_num_threads=torch.get_num_threads(),
        rows=rows,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="tiny,small", help="comma-separated: tiny, small, base")
    parser.add_argument("--batch_size", type=int, help="overrides every size's preset")
    parser.add_argument("--input_len", type=int)
    parser.add_argument("--target_len", type=int)
    parser.add_argument("--steps", type=int, help="timed steps per framework (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=tuple(LOSS_TOLERANCE))
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--dropout_prng", default="threefry2x32", help="train.dropout_prng (with --dropout > 0)")
    parser.add_argument("--probe_n", type=int, help="matmul probe size (default 2048 on CPU, 8192 elsewhere)")


def from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {
        k: getattr(args, k)
        for k in ("batch_size", "input_len", "target_len", "steps")
        if getattr(args, k, None) is not None
    }
    probe_n = args.probe_n or (2048 if jax.default_backend() == "cpu" else 8192)
    return run(args.sizes.split(","), overrides, args.warmup, args.dtype, args.dropout, probe_n, args.dropout_prng)


def summary(report: dict[str, Any]) -> str:
    probe = report["matmul_probe"]
    return (
        f"matmul probe ({probe['n']}^2 {probe['dtype']}): {probe['flops_per_s'] / 1e9:,.1f} GFLOP/s; "
        f"MFU peak {report['peak_flops_per_device'] / 1e9:,.1f} GFLOP/s ({report['peak_source']}); "
        f"torch on {report['torch_device']} with {report['torch_num_threads']} threads\n"
        + harness.format_table(COLUMNS, table_rows(report["rows"]))
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses ``argv``, runs, prints the table and writes ``--json`` if given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    header = harness.report_header(argv)
    report = {**header, "train_vs_torch": from_args(args)}
    harness.finish(report, args.json)
    print(summary(report["train_vs_torch"]))
    return report


if __name__ == "__main__":
    reexec_with_malloc_tuning(sys.argv)  # The figures are measured as the CLI runs: with its allocator setting.
    main(sys.argv[1:])
