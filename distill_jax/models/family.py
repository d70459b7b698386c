"""One entry point for every student architecture (T5, BART): configs, models, parameters, HF import/export.

The trainer, evaluator and CLI go through here, so adding an architecture means its modules plus one
``FAMILIES`` entry (and its ``model_type`` in ``_MODEL_TYPES`` for HF import), not touching them. A
config's ``family`` ("t5" or "bart") picks the entry; an HF directory's ``config.json`` ``model_type``
picks it on import.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
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


def _bart_preset(size: str, **overrides: Any) -> BartConfig:
    # A BART preset given only ``eos_token_id`` also starts decoding from it, BART's convention.
    if "eos_token_id" in overrides:
        overrides = {"decoder_start_token_id": overrides["eos_token_id"]} | overrides
    return bart_config.get_config(size, **overrides)


@dataclasses.dataclass(frozen=True)
class Family:
    """What the rest of the product needs of one architecture; ``FAMILIES`` names each by ``config.family``."""

    model: Callable[[Any], Model]
    sizes: Mapping[str, Any]  # preset name -> its config fields
    preset: Callable[..., ModelConfig]  # (size, **overrides) -> config
    init_params: Callable[[Any, jax.Array], dict[str, Any]]
    num_params: Callable[[Any], int]
    flops_per_token: Callable[[Any, int, int], float]
    hf_config: Callable[..., ModelConfig]  # (hf_dir, **overrides) -> config
    load_hf_params: Callable[[str, Any], dict[str, Any]]
    save_hf: Callable[..., None]
    save_peft_adapter: Callable[..., None]
    # Fields that fix the parameter shapes; dtype, dropout and remat may change between resumes.
    architecture_fields: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "t5": Family(
        model=T5Transformer,
        sizes=t5_config.SIZES,
        preset=t5_config.get_config,
        init_params=t5.init_params,
        num_params=t5_config.num_params,
        flops_per_token=t5_config.flops_per_token,
        hf_config=hf_t5.hf_t5_config,
        load_hf_params=hf_t5.load_hf_params,
        save_hf=hf_t5.save_hf_t5,
        save_peft_adapter=hf_t5.save_peft_adapter,
        architecture_fields=(
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
    ),
    "bart": Family(
        model=BartTransformer,
        sizes=bart_config.SIZES,
        preset=_bart_preset,
        init_params=bart.init_params,
        num_params=bart_config.num_params,
        flops_per_token=bart_config.flops_per_token,
        hf_config=hf_bart.hf_bart_config,
        load_hf_params=hf_bart.load_hf_params,
        save_hf=hf_bart.save_hf_bart,
        save_peft_adapter=hf_bart.save_peft_adapter,
        architecture_fields=(
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
    ),
}
# config.json model_type -> family.
_MODEL_TYPES = {"t5": "t5", "mt5": "t5", "bart": "bart"}
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
    return FAMILIES[model_type_of(hf_dir)].hf_config(hf_dir, **overrides)


def load_hf_params(hf_dir: str, config: ModelConfig) -> dict[str, Any]:
    """Host parameters for ``model_for(config)`` from a local HF directory's safetensors."""
    return FAMILIES[config.family].load_hf_params(hf_dir, config)


def save_hf(
    out_dir: str, config: ModelConfig, params: Mapping[str, Any], tokenizer_dir: str | None, *, overwrite: bool = False
) -> None:
    """Writes a transformers directory (``save_hf_t5`` / ``save_hf_bart``) that ``from_pretrained`` loads."""
    FAMILIES[config.family].save_hf(out_dir, config, params, tokenizer_dir, overwrite=overwrite)


def save_peft_adapter(out_dir: str, config: ModelConfig, params: Mapping[str, Any], base_model: str) -> None:
    """Writes ``params``' LoRA adapters in PEFT's format for the transformers model in ``base_model``."""
    FAMILIES[config.family].save_peft_adapter(out_dir, config, params, base_model)


def model_for(config: ModelConfig) -> Model:
    return FAMILIES[config.family].model(config)


def init_params(config: ModelConfig, rng: jax.Array) -> dict[str, Any]:
    """Random boxed parameters of ``model_for(config)`` (see ``t5.init_params``)."""
    return FAMILIES[config.family].init_params(config, rng)


def preset_config(size: str, **overrides: Any) -> ModelConfig:
    """A preset by name: T5's ``t5_config.SIZES`` or BART's ``bart_config.SIZES`` (the ``bart-*`` names)."""
    for family in FAMILIES.values():
        if size in family.sizes:
            return family.preset(size, **overrides)
    known = sorted(name for family in FAMILIES.values() for name in family.sizes)
    raise ConfigError(f"unknown model size {size!r}; known: {known}")


def num_params(config: ModelConfig) -> int:
    return FAMILIES[config.family].num_params(config)


def flops_per_token(config: ModelConfig, input_len: int, target_len: int) -> float:
    """Training FLOPs per target token of one example (see ``t5_config.flops_per_token``)."""
    return FAMILIES[config.family].flops_per_token(config, input_len, target_len)


def config_dict(config: ModelConfig) -> dict[str, Any]:
    """JSON-able description of ``config`` for checkpoint metadata, with its family."""
    return {"family": config.family, **dataclasses.asdict(config)}


def architecture_changes(saved: Mapping[str, Any], config: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """Shape-deciding fields that differ between a checkpoint's ``config_dict`` and ``config``: {field: (saved, now)}.

    Fields missing from ``saved`` (checkpoints older than the field, or than BART) take their defaults.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    defaults["family"] = "t5"
    fields = ("family",) + FAMILIES[config.family].architecture_fields + _TREE_FIELDS
    # Through JSON, as meta was saved: tuples compare as lists.
    was = json.loads(json.dumps({k: saved.get(k, defaults.get(k)) for k in fields}))
    now = json.loads(json.dumps({k: getattr(config, k) for k in fields}))
    return {k: (was[k], now[k]) for k in fields if was[k] != now[k]}
