"""LoRA (Hu et al. 2021): trainable low-rank updates beside frozen projections, and merging them back.

An adapted projection computes ``W x + (alpha / r) * B(A(dropout(x)))`` with A ``[in..., r]`` and
B ``[r, out...]`` (B starts at zero, so a fresh adapter leaves the model unchanged). Adapters are
children named ``lora`` of the projection they adapt (``.../attention/query/lora/{lora_a,lora_b}``),
carry logical axis names (their input/output dims shard like the base kernel's), and are the
only trainable leaves when ``lora_rank > 0``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.models.bart_config import BartConfig
from distill_jax.models.t5_config import T5Config

ADAPTER = "lora"


class LoraAdapter(nn.Module):
    """The low-rank update of one projection whose kernel is ``in_shape + out_shape``."""

    config: T5Config | BartConfig
    in_shape: tuple[int, ...]
    in_names: tuple[str, ...]
    out_shape: tuple[int, ...]
    out_names: tuple[str, ...]

    @nn.compact
    def __call__(self, x: jax.Array, enable_dropout: bool = False) -> jax.Array:
        cfg = self.config
        rank = cfg.lora_rank
        n_in = len(self.in_shape)
        # PEFT's default: A ~ U(+-1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)), B = 0.
        a_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=tuple(range(n_in)), out_axis=-1)
        a = self.param(
            "lora_a",
            nn.with_logical_partitioning(a_init, (*self.in_names, "lora_rank")),
            (*self.in_shape, rank),
            jnp.dtype(cfg.param_dtype),
        )
        b = self.param(
            "lora_b",
            nn.with_logical_partitioning(nn.initializers.zeros, ("lora_rank", *self.out_names)),
            (rank, *self.out_shape),
            jnp.dtype(cfg.param_dtype),
        )
        dtype = jnp.dtype(cfg.dtype)
        x = nn.Dropout(cfg.lora_dropout)(x, deterministic=not enable_dropout).astype(dtype)
        down = jnp.tensordot(x, a.astype(dtype), axes=n_in)
        return jnp.tensordot(down, b.astype(dtype), axes=1) * (cfg.lora_alpha / rank)


def adapts(config: T5Config | BartConfig, target: str) -> bool:
    """Whether projection `target` (q, k, v, o, wi, wo, lm_head) gets an adapter."""
    return config.lora_rank > 0 and target in config.lora_targets


def trainable_mask(params: Any) -> Any:
    """True for adapter leaves. Without adapters in the tree, everything is trainable."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    has_adapters = any(_is_adapter_path(path) for path, _ in flat)
    return jax.tree_util.tree_map_with_path(lambda path, _: _is_adapter_path(path) or not has_adapters, params)


def _is_adapter_path(path: tuple[Any, ...]) -> bool:
    return any(getattr(k, "key", None) == ADAPTER for k in path)


def merge_lora(params: dict[str, Any], config: T5Config | BartConfig) -> dict[str, Any]:
    """Folds every adapter into its kernel (W + alpha/r * A B) and drops the adapters.

    The result is a plain model's params: load it with ``dataclasses.replace(config, lora_rank=0)``.
    """
    if config.scan_layers:  # A stacked adapter's A @ B would contract across layers.
        raise ValueError(
            "merge_lora takes per-layer params: convert scanned ones with encoder_decoder.unstack_layers first"
        )

    def merge(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out = {k: merge(v) for k, v in node.items() if k != ADAPTER}
        if ADAPTER in node:
            a, b = np.asarray(node[ADAPTER]["lora_a"], np.float32), np.asarray(node[ADAPTER]["lora_b"], np.float32)
            kernel = np.asarray(node["kernel"])
            delta = np.tensordot(a, b, axes=1) * (config.lora_alpha / config.lora_rank)
            out["kernel"] = (kernel.astype(np.float32) + delta).astype(kernel.dtype)
        return out

    return merge(params)


def strip_adapters(params: dict[str, Any]) -> dict[str, Any]:
    """The base model's params: every adapter dropped, kernels untouched."""
    return {k: strip_adapters(v) if isinstance(v, dict) else v for k, v in params.items() if k != ADAPTER}


def adapters_only(params: dict[str, Any]) -> dict[str, Any]:
    """The adapter subtrees of `params` under their full paths (empty when there are none)."""
    out = {}
    for key, value in params.items():
        if key == ADAPTER:
            out[key] = value
        elif isinstance(value, dict) and (adapters := adapters_only(value)):
            out[key] = adapters
    return out


def with_adapters(base: dict[str, Any], initialised: dict[str, Any]) -> dict[str, Any]:
    """`base` (a plain model's params, e.g. from Hugging Face) plus the adapters of `initialised`."""
    out = dict(base)
    for key, value in initialised.items():
        if key == ADAPTER:
            out[key] = value
        elif isinstance(value, dict) and key in base:
            out[key] = with_adapters(base[key], value)
    return out
