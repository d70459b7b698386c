"""What the train loop logs every `train.log_every` steps, from the metric sums the jitted step accumulates.

Losses and accuracies per token (overall and per domain), throughput, and MFU against the device's
dense bf16 peak (the vendors' datasheets; `train.peak_flops_per_device` overrides it).
"""

from __future__ import annotations

import jax
import numpy as np

# Dense bf16 peak FLOP/s per device, from the vendors' datasheets, for the MFU estimate.
PEAK_FLOPS_BY_DEVICE_KIND = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops_per_device(configured: float) -> float | None:
    """`configured` when > 0, else the datasheet peak of this device kind; None where unknown (CPU)."""
    if configured > 0:
        return configured
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS_BY_DEVICE_KIND.items():
        if name.lower() in kind.lower():
            return flops
    return None


def train_scalars(
    sums: dict[str, np.ndarray],
    domain_names: list[str],
    seconds: float,
    num_devices: int,
    flops_per_example: float,
    peak_flops: float | None,
) -> dict[str, float]:
    """The interval's scalars from its summed counters (host numpy), over `seconds` of wall time."""
    steps = max(float(sums["steps"]), 1.0)
    tokens = float(sums["token_count"].sum())
    examples = float(sums["example_count"].sum())
    out = {
        "train/loss": float(sums["loss_sum"]) / steps,
        "train/ce": float(sums["ce_sum"].sum()) / max(tokens, 1.0),
        "train/token_accuracy": float(sums["correct_sum"].sum()) / max(tokens, 1.0),
        "train/grad_norm": float(sums["grad_norm_sum"]) / steps,
        "perf/step_time_s": seconds / steps,
        "perf/tokens_per_s": (tokens + float(sums["input_token_count"])) / seconds,
        "perf/examples_per_s": examples / seconds,
    }
    kd_tokens = float(sums["kd_token_count"].sum())
    if kd_tokens > 0:  # KD runs: the divergence on tokens with teacher logits, and their share of all tokens
        out["train/kd"] = float(sums["kd_sum"].sum()) / kd_tokens
        out["train/kd_token_fraction"] = kd_tokens / max(tokens, 1.0)
    if peak_flops:
        out["perf/mfu"] = flops_per_example * examples / seconds / (peak_flops * num_devices)
    for i, d in enumerate(domain_names):
        if sums["token_count"][i] > 0:
            out[f"train/ce/{d}"] = float(sums["ce_sum"][i] / sums["token_count"][i])
            out[f"train/token_accuracy/{d}"] = float(sums["correct_sum"][i] / sums["token_count"][i])
    return out
