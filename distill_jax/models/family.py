"""One entry point for every student architecture (T5, BART): configs, models, parameters, HF import/export.

The trainer, evaluator and CLI go through here, so adding an architecture means adding a branch
here, not touching them. A config's ``family`` ("t5" or "bart") picks the branch; an HF directory's
``config.json`` ``model_type`` picks it on import.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax

from distill_jax.config import ConfigError
from distill_jax.models import bart, bart_config, hf_bart, hf_t5, t5, t5_config
from distill_jax.models.bart import BartTransformer
from distill_jax.models.bart_config import BartConfig
from distill_jax.models.hf_files import read_config
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config

ModelConfig = T5Config | BartConfig
Model = T5Transformer | BartTransformer

# config.json model_type -> family.
_MODEL_TYPES = {"t5": "t5", "mt5": "t5", "bart": "bart"}
# Fields that fix the parameter shapes; dtype, dropout and remat may change between resumes.
_ARCHITECTURE_FIELDS = {
    "t5": (
        "vocab_size",
        "d_model",
        "d_kv",
        "d_ff",
        "num_heads",
        "num_encoder_layers",
        "num_decoder_layers",
        "relative_attention_num_buckets",
        "feed_forward_proj",
        "tie_word_embeddings",
    ),
    "bart": (
        "vocab_size",
        "d_model",
        "encoder_attention_heads",
        "decoder_attention_heads",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "num_encoder_layers",
        "num_decoder_layers",
        "max_position_embeddings",
        "tie_word_embeddings",
    ),
}
# Also architecture for either: stacked vs per-layer params and the adapters change the tree.
_TREE_FIELDS = ("scan_layers", "lora_rank", "lora_targets")


def model_type_of(hf_dir: str) -> str:
    """The family ("t5" or "bart") of a local HF directory, from its config.json's ``model_type``."""
    hf = read_config(hf_dir)
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ValueError(
            f"{os.path.join(hf_dir, 'config.json')}: unsupported architecture model_type={model_type!r} "
            f"(architectures {hf.get('architectures')}); supported model types: {', '.join(_MODEL_TYPES)} "
            "(T5 v1.0/v1.1, Flan-T5, ByT5, mT5 and BART)"
        )
    return _MODEL_TYPES[model_type]


def hf_config(hf_dir: str, **overrides: Any) -> ModelConfig:
    """The config described by a local HF directory; ``overrides`` replace fields (dtype, dropout, LoRA, ...)."""
    if model_type_of(hf_dir) == "bart":
        return hf_bart.hf_bart_config(hf_dir, **overrides)
    return hf_t5.hf_t5_config(hf_dir, **overrides)


def load_hf_params(hf_dir: str, config: ModelConfig) -> dict[str, Any]:
    """Host parameters for ``model_for(config)`` from a local HF directory's safetensors."""
    if config.family == "bart":
        return hf_bart.load_hf_params(hf_dir, config)
    return hf_t5.load_hf_params(hf_dir, config)


def save_hf(
    out_dir: str, config: ModelConfig, params: Mapping[str, Any], tokenizer_dir: str | None, *, overwrite: bool = False
) -> None:
    """Writes a transformers directory (``save_hf_t5`` / ``save_hf_bart``) that ``from_pretrained`` loads."""
    save = hf_bart.save_hf_bart if config.family == "bart" else hf_t5.save_hf_t5
    save(out_dir, config, params, tokenizer_dir, overwrite=overwrite)


def save_peft_adapter(out_dir: str, config: ModelConfig, params: Mapping[str, Any], base_model: str) -> None:
    """Writes ``params``' LoRA adapters in PEFT's format for the transformers model in ``base_model``."""
    save = hf_bart.save_peft_adapter if config.family == "bart" else hf_t5.save_peft_adapter
    save(out_dir, config, params, base_model)


def model_for(config: ModelConfig) -> Model:
    return BartTransformer(config) if config.family == "bart" else T5Transformer(config)


def init_params(config: ModelConfig, rng: jax.Array) -> dict[str, Any]:
    """Random boxed parameters of ``model_for(config)`` (see ``t5.init_params``)."""
    return bart.init_params(config, rng) if config.family == "bart" else t5.init_params(config, rng)


def preset_config(size: str, **overrides: Any) -> ModelConfig:
    """A preset by name: T5's ``t5_config.SIZES`` or BART's ``bart_config.SIZES`` (the ``bart-*`` names).

    A BART preset given only ``eos_token_id`` also starts decoding from it, BART's convention.
    """
    if size in bart_config.SIZES:
        if "eos_token_id" in overrides:
            overrides = {"decoder_start_token_id": overrides["eos_token_id"]} | overrides
        return bart_config.get_config(size, **overrides)
    if size in t5_config.SIZES:
        return t5_config.get_config(size, **overrides)
    raise ConfigError(f"unknown model size {size!r}; known: {sorted(t5_config.SIZES) + sorted(bart_config.SIZES)}")


def num_params(config: ModelConfig) -> int:
    return bart_config.num_params(config) if config.family == "bart" else t5_config.num_params(config)


def flops_per_token(config: ModelConfig, input_len: int, target_len: int) -> float:
    """Training FLOPs per target token of one example (see ``t5_config.flops_per_token``)."""
    count = bart_config.flops_per_token if config.family == "bart" else t5_config.flops_per_token
    return count(config, input_len, target_len)


def config_dict(config: ModelConfig) -> dict[str, Any]:
    """JSON-able description of ``config`` for checkpoint metadata, with its family."""
    return {"family": config.family, **dataclasses.asdict(config)}


def architecture_changes(saved: Mapping[str, Any], config: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """Shape-deciding fields that differ between a checkpoint's ``config_dict`` and ``config``: {field: (saved, now)}.

    Fields missing from ``saved`` (checkpoints older than the field, or than BART) take their defaults.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    defaults["family"] = "t5"
    fields = ("family",) + _ARCHITECTURE_FIELDS[config.family] + _TREE_FIELDS
    # Through JSON, as meta was saved: tuples compare as lists.
    was = json.loads(json.dumps({k: saved.get(k, defaults.get(k)) for k in fields}))
    now = json.loads(json.dumps({k: getattr(config, k) for k in fields}))
    return {k: (was[k], now[k]) for k in fields if was[k] != now[k]}
