"""transformers T5 checkpoints (PyTorch layout, safetensors) to and from ``T5Transformer`` parameters.

Import warm-starts students from public checkpoints (t5, t5-v1_1, flan-t5, byt5, mt5) and proves
logits parity with ``transformers.T5ForConditionalGeneration``; export writes a directory that
``from_pretrained`` loads with no missing or unexpected weights. One table (``_hf_layout``) names
every tensor for both directions (``hf_convert.HfConverter`` reads it), so they cannot drift apart. Weights are read and written as
safetensors only (never pickle), and nothing here needs torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from distill_jax.models.hf_convert import HfConverter, Layout
from distill_jax.models.hf_files import read_checkpoint, read_config
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config

# Present in some HF checkpoints but unused by HF itself (cross-attention has no position bias).
_IGNORED = frozenset({"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"})
# Aliases of shared.weight that HF writes to state dicts; our model has one shared embedding.
_EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# config.json model types whose checkpoints have exactly T5's tensors (mT5 is v1.1 with a bigger
# vocabulary). UMT5 is not among them: it learns a position bias per layer.
_SUPPORTED_MODEL_TYPES = ("t5", "mt5")


def _attention_layout(ours: tuple[str, ...], hf: str) -> Layout:
    layout = {
        (*ours, name, "kernel"): (f"{hf}.{short}.weight", 1)
        for name, short in (("query", "q"), ("key", "k"), ("value", "v"))
    }
    layout[(*ours, "out", "kernel")] = (f"{hf}.o.weight", 2)
    return layout


def _mlp_layout(cfg: T5Config, ours: tuple[str, ...], hf: str) -> Layout:
    names = ("wi_0", "wi_1", "wo") if cfg.is_gated_act else ("wi", "wo")
    return {(*ours, name, "kernel"): (f"{hf}.{name}.weight", 1) for name in names}


def _hf_layout(cfg: T5Config) -> Layout:
    """Where every parameter of ``T5Transformer(cfg)`` lives in an HF T5 state dict."""
    layout: Layout = {("token_embedder", "embedding"): ("shared.weight", None)}
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


_CONVERTER = HfConverter(T5Transformer, _hf_layout, "shared.weight", _EMBEDDING_ALIASES, ignored=_IGNORED)


def params_from_hf_state_dict(state_dict: Mapping[str, Any], config: T5Config) -> dict[str, Any]:
    """An HF T5 state dict -> an unboxed parameter tree for ``T5Transformer(config)`` (``HfConverter.params_from_state_dict``)."""
    return _CONVERTER.params_from_state_dict(state_dict, config)


def config_from_hf(hf_dir: str, **config_overrides: Any) -> T5Config:
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
    config = config_from_hf(hf_dir, **config_overrides)
    return config, load_hf_params(hf_dir, config)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


def hf_state_dict_from_params(params: Mapping[str, Any], config: T5Config) -> dict[str, np.ndarray]:
    """The HF T5 state dict of ``T5Transformer(config)`` parameters; inverse of ``params_from_hf_state_dict``.

    The shared embedding is written once, as ``shared.weight`` (transformers ties
    ``encoder/decoder.embed_tokens`` to it), and ``lm_head.weight`` only for an untied head, so
    ``from_pretrained`` finds no missing or unexpected weights either way.
    """
    return _CONVERTER.state_dict_from_params(params, config)


def hf_config_dict(config: T5Config) -> dict[str, Any]:
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


def generation_config(config: T5Config) -> dict[str, Any]:
    """generation_config.json contents: the token ids T5 starts, ends and pads with."""
    return {
        "decoder_start_token_id": config.decoder_start_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }


# ----------------------------------------------------------------------------------------------
# LoRA adapters in PEFT's format
# ----------------------------------------------------------------------------------------------


def peft_state_dict_from_params(params: Mapping[str, Any], config: T5Config) -> dict[str, np.ndarray]:
    """The LoRA adapters of ``params`` as PEFT names them on a transformers T5 (see ``hf_files.peft_state_dict``)."""
    return _CONVERTER.peft_state_dict(params, config)
