"""transformers T5 checkpoints (PyTorch layout, safetensors) to and from ``T5Transformer`` parameters.

Import warm-starts students from public checkpoints (t5, t5-v1_1, flan-t5, byt5, mt5) and proves
logits parity with ``transformers.T5ForConditionalGeneration``; export writes a directory that
``from_pretrained`` loads with no missing or unexpected weights. One table (``_hf_layout``) names
every tensor for both directions, so they cannot drift apart. Weights are read and written as
safetensors only (never pickle), and nothing here needs torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from distill_jax.models.encoder_decoder import stack_layers, unstack_layers
from distill_jax.models.hf_files import (
    check_params_match,
    peft_state_dict,
    read_checkpoint,
    read_config,
    save_model_directory,
    save_peft_directory,
)
from distill_jax.models.t5 import init_params
from distill_jax.models.t5_config import T5Config

# Present in some HF checkpoints but unused by HF itself (cross-attention has no position bias).
_IGNORED = frozenset({"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"})
# Aliases of shared.weight that HF writes to state dicts; our model has one shared embedding.
_EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# config.json model types whose checkpoints have exactly T5's tensors (mT5 is v1.1 with a bigger
# vocabulary). UMT5 is not among them: it learns a position bias per layer.
_SUPPORTED_MODEL_TYPES = ("t5", "mt5")
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


def _expected_shapes(config: T5Config) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flattened parameter shapes of ``T5Transformer(config)``, checked against the HF layout."""
    expected = traverse_util.flatten_dict(
        nn.meta.unbox(jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))))
    )
    layout = _hf_layout(config)
    if set(layout) != set(expected):
        raise RuntimeError(f"HF layout out of sync with T5Transformer: {sorted(set(layout) ^ set(expected))}")
    return expected


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
    ``nn.meta.unbox(init_params(config, rng))`` (layers stacked when ``config.scan_layers``). Raises
    ``ValueError`` naming every missing, unexpected, wrong-shape or inconsistently aliased tensor.
    """
    if config.scan_layers:  # HF names tensors per layer: convert per layer, then stack.
        per_layer = dataclasses.replace(config, scan_layers=False)
        return stack_layers(params_from_hf_state_dict(state_dict, per_layer), per_layer)
    expected = _expected_shapes(config)
    layout = _hf_layout(config)
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


def hf_t5_config(hf_dir: str, **config_overrides: Any) -> T5Config:
    """The ``T5Config`` described by a local HF directory's ``config.json``.

    Raises ``ValueError`` for any architecture but T5's (BART, UMT5, ...): their tensors would
    not map, and failing on the config says why before any weights are read.
    """
    hf_config = read_config(hf_dir)
    path = os.path.join(hf_dir, "config.json")
    model_type = hf_config.get("model_type")
    if model_type not in _SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{path}: unsupported architecture model_type={model_type!r} "
            f"(architectures {hf_config.get('architectures')}); only T5-family encoder-decoders with T5's "
            f"tensor layout import (model_type {' or '.join(_SUPPORTED_MODEL_TYPES)}: T5 v1.0/v1.1, Flan-T5, ByT5, mT5)"
        )
    if model_type == "mt5":
        # transformers' mT5 never scales its decoder output (it has no v1.0 mode) whatever
        # tie_word_embeddings says; an untied config without lm_head.weight reuses shared.weight.
        config_overrides = {"tie_word_embeddings": False} | config_overrides
    return T5Config.from_hf_dict(hf_config, **config_overrides)


def load_hf_params(hf_dir: str, config: T5Config) -> dict[str, Any]:
    """Host parameters for ``T5Transformer(config)`` from a local HF T5 directory's safetensors.

    transformers >= 5 saves a tied LM head only as ``shared.weight``, so an untied config without
    ``lm_head.weight`` starts its head from the shared embedding, exactly as transformers loads it.
    """
    tensors = read_checkpoint(hf_dir)
    if not config.tie_word_embeddings and "lm_head.weight" not in tensors and "shared.weight" in tensors:
        tensors["lm_head.weight"] = tensors["shared.weight"]
    try:
        return params_from_hf_state_dict(tensors, config)
    except ValueError as err:
        raise ValueError(f"{hf_dir}: {err}") from err


def load_hf_t5(hf_dir: str, **config_overrides: Any) -> tuple[T5Config, dict[str, Any]]:
    """Reads a local HF T5 directory (``config.json`` + safetensors) into (config, params).

    ``config_overrides`` replace config fields (e.g. ``dropout_rate``, ``dtype``, ``remat``,
    ``param_dtype``).
    """
    config = hf_t5_config(hf_dir, **config_overrides)
    return config, load_hf_params(hf_dir, config)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


def hf_state_dict_from_params(params: Mapping[str, Any], config: T5Config) -> dict[str, np.ndarray]:
    """The HF T5 state dict of ``T5Transformer(config)`` parameters; inverse of ``params_from_hf_state_dict``.

    Tensors keep the parameters' dtype. The shared embedding is written once, as ``shared.weight``
    (transformers ties ``encoder/decoder.embed_tokens`` to it), and ``lm_head.weight`` only for an
    untied head, so ``from_pretrained`` finds no missing or unexpected weights either way. Raises
    ``ValueError`` naming every missing, unexpected or wrong-shape parameter.
    """
    if config.scan_layers:
        config, params = _per_layer(config, params)
    expected = _expected_shapes(config)
    flat = traverse_util.flatten_dict(params)
    check_params_match(flat, expected)
    state = {}
    for path, (name, input_dims) in _hf_layout(config).items():
        value = np.asarray(flat[path])
        if input_dims is not None:  # Back to a torch Linear weight [out, in].
            value = value.reshape(math.prod(value.shape[:input_dims]), -1).T
        state[name] = np.ascontiguousarray(value)
    return state


def _per_layer(config: T5Config, params: Mapping[str, Any]) -> tuple[T5Config, dict[str, Any]]:
    """A ``scan_layers`` model's config and params in the per-layer layout HF's names follow."""
    return dataclasses.replace(config, scan_layers=False), unstack_layers(dict(params), config)


def _hf_config(config: T5Config) -> dict[str, Any]:
    """config.json contents that transformers 4 and 5 both read as ``config``'s architecture.

    transformers 4 unties the head when ``tie_word_embeddings`` is false; transformers 5 always
    ties it in the config, unties it because the checkpoint holds a distinct ``lm_head.weight``,
    and takes v1.0's output scaling from ``scale_decoder_outputs``. Both flags carry the same value.
    """
    return {
        **config.to_hf_dict(),
        "model_type": "t5",
        "scale_decoder_outputs": config.tie_word_embeddings,
        "torch_dtype": config.param_dtype,
    }


def save_hf_t5(
    out_dir: str,
    config: T5Config,
    params: Mapping[str, Any],
    tokenizer_dir: str | None,
    *,
    overwrite: bool = False,
) -> None:
    """Writes a transformers T5 directory: config.json, model.safetensors, generation_config.json, tokenizer.

    ``params`` are host-readable (numpy, or fully addressable jax arrays). ``tokenizer_dir`` is a
    transformers tokenizer directory whose tokenizer files are copied; None writes ByT5's files.
    Written atomically (see ``hf_files.save_model_directory``); a non-empty ``out_dir`` is replaced
    only with ``overwrite``.
    """
    generation = {
        "decoder_start_token_id": config.decoder_start_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    state = hf_state_dict_from_params(params, config)
    save_model_directory(out_dir, _hf_config(config), generation, state, tokenizer_dir, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------
# LoRA adapters in PEFT's format
# ----------------------------------------------------------------------------------------------


def peft_state_dict_from_params(params: Mapping[str, Any], config: T5Config) -> dict[str, np.ndarray]:
    """The LoRA adapters of ``params`` as PEFT names them on a transformers T5 (see ``hf_files.peft_state_dict``)."""
    if config.scan_layers:
        config, params = _per_layer(config, params)
    layout = _hf_layout(dataclasses.replace(config, lora_rank=0))
    return peft_state_dict(params, {path: name for path, (name, _) in layout.items()}, config.lora_rank)


def save_peft_adapter(out_dir: str, config: T5Config, params: Mapping[str, Any], base_model: str) -> None:
    """Writes adapter_model.safetensors + adapter_config.json that ``peft.PeftModel.from_pretrained`` loads
    onto the transformers model in ``base_model`` (atomically, like save_hf_t5)."""
    state = peft_state_dict_from_params(params, config)
    save_peft_directory(out_dir, state, config.lora_rank, config.lora_alpha, config.lora_dropout, base_model)
