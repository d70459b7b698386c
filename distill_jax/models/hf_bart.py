"""transformers BART checkpoints (PyTorch layout, safetensors) to and from ``BartTransformer`` parameters.

Import warm-starts students from local BART directories (``facebook/bart-base`` and its fine-tunes)
with logits parity with ``transformers.BartForConditionalGeneration``; export writes a directory that
``from_pretrained`` loads with no missing or unexpected weights, and LoRA adapters in PEFT's format.
One table (``_hf_layout``) names every tensor for both directions. Weights are safetensors only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from distill_jax.models.bart import BartTransformer
from distill_jax.models.bart_config import BartConfig
from distill_jax.models.hf_convert import HfConverter, Layout
from distill_jax.models.hf_files import read_checkpoint, read_config

# Copies of model.shared.weight in HF state dicts (lm_head.weight too when the head is tied).
_EMBEDDING_ALIASES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")
# fairseq leftovers that transformers ignores on load.
_IGNORED = frozenset({"model.encoder.version", "model.decoder.version"})
# Checkpoints saved from BartModel (facebook/bart-base among them) name tensors without "model.".
_BASE_MODEL_ROOTS = ("shared", "encoder", "decoder")


def _attention_layout(ours: tuple[str, ...], hf: str) -> Layout:
    layout: Layout = {}
    for name, short in (("query", "q"), ("key", "k"), ("value", "v")):
        layout[(*ours, name, "kernel")] = (f"{hf}.{short}_proj.weight", 1)
        layout[(*ours, name, "bias")] = (f"{hf}.{short}_proj.bias", "flat")
    layout[(*ours, "out", "kernel")] = (f"{hf}.out_proj.weight", 2)
    layout[(*ours, "out", "bias")] = (f"{hf}.out_proj.bias", None)
    return layout


def _norm_layout(ours: tuple[str, ...], hf: str) -> Layout:
    return {(*ours, "scale"): (f"{hf}.weight", None), (*ours, "bias"): (f"{hf}.bias", None)}


def _mlp_layout(ours: tuple[str, ...], hf: str) -> Layout:
    layout: Layout = {}
    for name, fc in (("wi", "fc1"), ("wo", "fc2")):
        layout[(*ours, name, "kernel")] = (f"{hf}.{fc}.weight", 1)
        layout[(*ours, name, "bias")] = (f"{hf}.{fc}.bias", None)
    return layout


def _hf_layout(cfg: BartConfig) -> Layout:
    """Where every parameter of ``BartTransformer(cfg)`` (per-layer layout) lives in an HF BART state dict."""
    layout: Layout = {("token_embedder", "embedding"): ("model.shared.weight", None)}
    for stack in ("encoder", "decoder"):
        layout[(stack, "position_embedder", "embedding")] = (f"model.{stack}.embed_positions.weight", None)
        layout |= _norm_layout((stack, "embedding_norm"), f"model.{stack}.layernorm_embedding")
    for i in range(cfg.num_encoder_layers):
        ours, hf = ("encoder", f"layers_{i}"), f"model.encoder.layers.{i}"
        layout |= _attention_layout((*ours, "attention"), f"{hf}.self_attn")
        layout |= _norm_layout((*ours, "attention_norm"), f"{hf}.self_attn_layer_norm")
        layout |= _mlp_layout((*ours, "mlp"), hf)
        layout |= _norm_layout((*ours, "mlp_norm"), f"{hf}.final_layer_norm")
    for i in range(cfg.num_decoder_layers):
        ours, hf = ("decoder", f"layers_{i}"), f"model.decoder.layers.{i}"
        layout |= _attention_layout((*ours, "self_attention"), f"{hf}.self_attn")
        layout |= _norm_layout((*ours, "self_attention_norm"), f"{hf}.self_attn_layer_norm")
        layout |= _attention_layout((*ours, "encoder_decoder_attention"), f"{hf}.encoder_attn")
        layout |= _norm_layout((*ours, "encoder_decoder_attention_norm"), f"{hf}.encoder_attn_layer_norm")
        layout |= _mlp_layout((*ours, "mlp"), hf)
        layout |= _norm_layout((*ours, "mlp_norm"), f"{hf}.final_layer_norm")
    layout[("decoder", "logits_bias")] = ("final_logits_bias", "row")
    if not cfg.tie_word_embeddings:
        layout[("decoder", "logits_dense", "kernel")] = ("lm_head.weight", 1)
    return layout


def _with_model_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {
        f"model.{name}" if name.split(".")[0] in _BASE_MODEL_ROOTS else name: value
        for name, value in state_dict.items()
    }


_CONVERTER = HfConverter(
    BartTransformer, _hf_layout, "model.shared.weight", _EMBEDDING_ALIASES, _IGNORED, frozenset({"final_logits_bias"})
)


def params_from_hf_state_dict(state_dict: Mapping[str, Any], config: BartConfig) -> dict[str, Any]:
    """Converts an HF BART state dict into an unboxed parameter tree for ``BartTransformer(config)``.

    Accepts ``BartForConditionalGeneration`` names and ``BartModel`` ones (no ``model.`` prefix, no
    head). A missing ``final_logits_bias`` is zeros, as transformers loads it. Returns host numpy arrays
    in ``config.param_dtype`` (layers stacked when ``config.scan_layers``); raises ``ValueError``
    naming every missing, unexpected, wrong-shape or inconsistently aliased tensor.
    """
    return _CONVERTER.params_from_state_dict(_with_model_prefix(state_dict), config)


def config_from_hf(hf_dir: str, **config_overrides: Any) -> BartConfig:
    """The ``BartConfig`` described by a local HF directory's ``config.json`` (``model_type`` must be bart).

    The forced BOS/EOS settings come from generation_config.json when it has them: transformers 5
    keeps them only there (older config.json files, bart-large's among them, carry them too).
    """
    hf_config = read_config(hf_dir)
    if hf_config.get("model_type") != "bart":
        raise ValueError(
            f"{os.path.join(hf_dir, 'config.json')}: model_type={hf_config.get('model_type')!r} is not bart"
        )
    generation_path = os.path.join(hf_dir, "generation_config.json")
    if os.path.isfile(generation_path):
        with open(generation_path) as f:
            generation = json.load(f)
        hf_config |= {k: generation[k] for k in ("forced_bos_token_id", "forced_eos_token_id") if k in generation}
    return BartConfig.from_hf_dict(hf_config, **config_overrides)


def load_hf_params(hf_dir: str, config: BartConfig) -> dict[str, Any]:
    """Host parameters for ``BartTransformer(config)`` from a local HF BART directory's safetensors."""
    try:
        return params_from_hf_state_dict(read_checkpoint(hf_dir), config)
    except ValueError as err:
        raise ValueError(f"{hf_dir}: {err}") from err


def load_hf_bart(hf_dir: str, **config_overrides: Any) -> tuple[BartConfig, dict[str, Any]]:
    """Reads a local HF BART directory (``config.json`` + safetensors) into (config, params)."""
    config = config_from_hf(hf_dir, **config_overrides)
    return config, load_hf_params(hf_dir, config)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


def hf_state_dict_from_params(params: Mapping[str, Any], config: BartConfig) -> dict[str, np.ndarray]:
    """The HF BART state dict of ``BartTransformer(config)`` parameters; inverse of ``params_from_hf_state_dict``.

    With a tied head the shared embedding is written once, as ``model.shared.weight`` (transformers ties
    the encoder's, the decoder's and the head to it). With ``tie_word_embeddings=False`` transformers 5
    unties all four, so ``lm_head.weight`` and copies for ``model.{encoder,decoder}.embed_tokens.weight``
    are written too. Raises ``ValueError`` naming every missing, unexpected or wrong-shape parameter.
    """
    state = _CONVERTER.state_dict_from_params(params, config)
    if not config.tie_word_embeddings:  # transformers 5 then unties the stacks' embeddings too: give it copies.
        state |= {alias: state["model.shared.weight"] for alias in _EMBEDDING_ALIASES}
    return state


def hf_config_dict(config: BartConfig) -> dict[str, Any]:
    """config.json contents for ``config``'s architecture."""
    return {**config.to_hf_dict(), "torch_dtype": config.param_dtype}


def generation_config(config: BartConfig) -> dict[str, Any]:
    """generation_config.json contents: the token ids and the forced BOS/EOS settings of ``config``.

    None forces nothing, which is what this package's decoders do.
    """
    keys = ("bos_token_id", "decoder_start_token_id", "eos_token_id", "pad_token_id")
    return {key: getattr(config, key) for key in keys + ("forced_bos_token_id", "forced_eos_token_id")}


# ----------------------------------------------------------------------------------------------
# LoRA adapters in PEFT's format
# ----------------------------------------------------------------------------------------------


def peft_state_dict_from_params(params: Mapping[str, Any], config: BartConfig) -> dict[str, np.ndarray]:
    """The LoRA adapters of ``params`` as PEFT names them on a transformers BART (q_proj, ..., fc1, fc2, lm_head)."""
    return _CONVERTER.peft_state_dict(params, config)
