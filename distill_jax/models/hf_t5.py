"""Import transformers T5 checkpoints (PyTorch layout) as ``T5Transformer`` parameters.

Used to warm-start students from public checkpoints and, in the tests, to prove logits parity
with ``transformers.T5ForConditionalGeneration``. Only the import direction exists; nothing
here needs torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open

from distill_jax.models.t5 import init_params
from distill_jax.models.t5_config import T5Config

# Present in some HF checkpoints but unused by HF itself (cross-attention has no position bias).
_IGNORED = frozenset({"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"})
# Aliases of shared.weight that HF writes to state dicts; our model has one shared embedding.
_EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

# (HF tensor name, number of leading input dims of our kernel) for every parameter path;
# ``None`` means the tensor is copied as is, otherwise it is a torch Linear weight [out, in].
_Layout = dict[tuple[str, ...], tuple[str, int | None]]


def _attention_layout(ours: tuple[str, ...], hf: str) -> _Layout:
    layout = {
        (*ours, name, "kernel"): (f"{hf}.{short}.weight", 1)
        for name, short in (("query", "q"), ("key", "k"), ("value", "v"))
    }
    layout[(*ours, "out", "kernel")] = (f"{hf}.o.weight", 2)
    return layout


def _mlp_layout(cfg: T5Config, ours: tuple[str, ...], hf: str) -> _Layout:
    names = ("wi_0", "wi_1", "wo") if cfg.is_gated_act else ("wi", "wo")
    return {(*ours, name, "kernel"): (f"{hf}.{name}.weight", 1) for name in names}


def _hf_layout(cfg: T5Config) -> _Layout:
    """Where every parameter of ``T5Transformer(cfg)`` lives in an HF T5 state dict."""
    layout: _Layout = {("token_embedder", "embedding"): ("shared.weight", None)}
    for stack in ("encoder", "decoder"):
        relpos = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        layout[(stack, "relpos_bias", "rel_embedding")] = (relpos, None)
        layout[(stack, f"{stack}_norm", "scale")] = (f"{stack}.final_layer_norm.weight", None)
    for i in range(cfg.num_encoder_layers):
        ours, hf = ("encoder", f"layers_{i}"), f"encoder.block.{i}.layer"
        layout[(*ours, "pre_attention_layer_norm", "scale")] = (f"{hf}.0.layer_norm.weight", None)
        layout |= _attention_layout((*ours, "attention"), f"{hf}.0.SelfAttention")
        layout[(*ours, "pre_mlp_layer_norm", "scale")] = (f"{hf}.1.layer_norm.weight", None)
        layout |= _mlp_layout(cfg, (*ours, "mlp"), f"{hf}.1.DenseReluDense")
    for i in range(cfg.num_decoder_layers):
        ours, hf = ("decoder", f"layers_{i}"), f"decoder.block.{i}.layer"
        layout[(*ours, "pre_self_attention_layer_norm", "scale")] = (f"{hf}.0.layer_norm.weight", None)
        layout |= _attention_layout((*ours, "self_attention"), f"{hf}.0.SelfAttention")
        layout[(*ours, "pre_cross_attention_layer_norm", "scale")] = (f"{hf}.1.layer_norm.weight", None)
        layout |= _attention_layout((*ours, "encoder_decoder_attention"), f"{hf}.1.EncDecAttention")
        layout[(*ours, "pre_mlp_layer_norm", "scale")] = (f"{hf}.2.layer_norm.weight", None)
        layout |= _mlp_layout(cfg, (*ours, "mlp"), f"{hf}.2.DenseReluDense")
    if not cfg.tie_word_embeddings:
        layout[("decoder", "logits_dense", "kernel")] = ("lm_head.weight", 1)
    return layout


def _hf_shape(shape: tuple[int, ...], input_dims: int | None) -> tuple[int, ...]:
    if input_dims is None:
        return shape
    return (math.prod(shape[input_dims:]), math.prod(shape[:input_dims]))


def _check_aliases(state_dict: Mapping[str, Any], cfg: T5Config) -> list[str]:
    """Errors for copies of ``shared.weight`` that hold different values.

    The model has one embedding shared by encoder and decoder (and by the head when tied).
    """
    aliases = _EMBEDDING_ALIASES + (("lm_head.weight",) if cfg.tie_word_embeddings else ())
    if "shared.weight" not in state_dict:
        return []
    shared = np.asarray(state_dict["shared.weight"])
    return [
        f"{name} differs from shared.weight, which this config shares"
        for name in aliases
        if name in state_dict and not np.array_equal(np.asarray(state_dict[name]), shared)
    ]


def params_from_hf_state_dict(state_dict: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
    """Converts an HF T5 state dict into an unboxed parameter tree for ``T5Transformer(config)``.

    Values may be numpy arrays or anything ``np.asarray`` accepts (CPU torch tensors). The
    result holds host numpy arrays in ``config.param_dtype``, structured like
    ``nn.meta.unbox(init_params(config, rng))``. Raises ``ValueError`` naming every missing,
    unexpected, wrong-shape or inconsistently aliased tensor.
    """
    expected = traverse_util.flatten_dict(
        nn.meta.unbox(jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))))
    )
    layout = _hf_layout(config)
    if set(layout) != set(expected):
        raise RuntimeError(f"HF layout out of sync with T5Transformer: {sorted(set(layout) ^ set(expected))}")

    dtype = jnp.dtype(config.param_dtype)
    errors = _check_aliases(state_dict, config)
    params = {}
    for path, (name, input_dims) in layout.items():
        if name not in state_dict:
            errors.append(f"missing {name}")
            continue
        tensor = np.asarray(state_dict[name])
        shape = expected[path].shape
        if tensor.shape != _hf_shape(shape, input_dims):
            errors.append(f"{name} has shape {tensor.shape}, expected {_hf_shape(shape, input_dims)}")
            continue
        if input_dims is not None:
            tensor = tensor.T.reshape(shape)
        params[path] = tensor.astype(dtype)

    known = {name for name, _ in layout.values()} | _IGNORED | set(_EMBEDDING_ALIASES) | {"lm_head.weight"}
    errors += [f"unexpected {name}" for name in sorted(set(state_dict) - known)]
    if errors:
        raise ValueError("HF T5 state dict does not match the config:\n  " + "\n  ".join(errors))
    return traverse_util.unflatten_dict(params)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    # The flax reader handles bfloat16 (safetensors.numpy does not); keep the arrays on the host.
    with jax.default_device(jax.devices("cpu")[0]), safe_open(path, framework="flax") as f:
        return {name: np.asarray(f.get_tensor(name)) for name in f.keys()}


def _read_checkpoint(hf_dir: str) -> dict[str, np.ndarray]:
    single = os.path.join(hf_dir, "model.safetensors")
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return _read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors |= _read_safetensors(os.path.join(hf_dir, shard))
        return tensors
    raise FileNotFoundError(f"{hf_dir} has neither model.safetensors nor model.safetensors.index.json")


def load_hf_t5(hf_dir: str, **config_overrides: Any) -> tuple[T5Config, dict[str, Any]]:
    """Reads a local HF T5 directory (``config.json`` + safetensors) into (config, params).

    ``config_overrides`` replace config fields (e.g. ``dropout_rate``, ``dtype``, ``remat``,
    ``param_dtype``). transformers >= 5 saves a tied LM head only as ``shared.weight``, so an
    untied config without ``lm_head.weight`` starts its head from the shared embedding,
    exactly as transformers loads it.
    """
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = T5Config.from_hf_dict(json.load(f), **config_overrides)
    tensors = _read_checkpoint(hf_dir)
    if not config.tie_word_embeddings and "lm_head.weight" not in tensors and "shared.weight" in tensors:
        tensors["lm_head.weight"] = tensors["shared.weight"]
    return config, params_from_hf_state_dict(tensors, config)
