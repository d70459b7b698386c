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
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import jax

from distill_jax.config import ConfigError
from distill_jax.models import bart_config, hf_bart, hf_t5, t5_config
from distill_jax.models.bart import BartTransformer
from distill_jax.models.bart_config import BartConfig
from distill_jax.models.encoder_decoder import EncoderDecoder
from distill_jax.models.hf_files import read_config, save_model_directory, save_peft_directory
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config

ModelConfig = T5Config | BartConfig
Model = T5Transformer | BartTransformer


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture: its model class and two modules whose functions have the same names in every family.

    ``configs`` (``t5_config``, ``bart_config``): ``SIZES`` (preset name -> config), ``get_config(size,
    **overrides)``, ``num_params(cfg)``, ``flops_per_token(cfg, input_len, target_len)`` and
    ``ARCHITECTURE_FIELDS`` (the fields that fix the parameter shapes; dtype, dropout and remat may change
    between resumes). ``hf`` (``hf_t5``, ``hf_bart``): ``config_from_hf(hf_dir, **overrides)``,
    ``load_hf_params(hf_dir, cfg)``, ``hf_config_dict(cfg)``, ``generation_config(cfg)``,
    ``hf_state_dict_from_params(params, cfg)`` and ``peft_state_dict_from_params(params, cfg)``.
    """

    model: type[EncoderDecoder]
    configs: ModuleType
    hf: ModuleType


FAMILIES: dict[str, Family] = {
    "t5": Family(T5Transformer, t5_config, hf_t5),
    "bart": Family(BartTransformer, bart_config, hf_bart),
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
    return FAMILIES[model_type_of(hf_dir)].hf.config_from_hf(hf_dir, **overrides)


def load_hf_params(hf_dir: str, config: ModelConfig) -> dict[str, Any]:
    """Host parameters for ``model_for(config)`` from a local HF directory's safetensors."""
    return FAMILIES[config.family].hf.load_hf_params(hf_dir, config)


def save_hf(
    out_dir: str, config: ModelConfig, params: Mapping[str, Any], tokenizer_dir: str | None, *, overwrite: bool = False
) -> None:
    """Writes a transformers directory that ``from_pretrained`` loads: config.json, model.safetensors,
    generation_config.json and the tokenizer.

    ``params`` are host-readable (numpy, or fully addressable jax arrays). ``tokenizer_dir`` is a
    transformers tokenizer directory whose tokenizer files are copied; None writes ByT5's files.
    Written atomically (see ``hf_files.save_model_directory``); a non-empty ``out_dir`` is replaced
    only with ``overwrite``. Raises ``ValueError`` naming every missing, unexpected or wrong-shape parameter.
    """
    hf = FAMILIES[config.family].hf
    state = hf.hf_state_dict_from_params(params, config)
    hf_config, generation = hf.hf_config_dict(config), hf.generation_config(config)
    save_model_directory(out_dir, hf_config, generation, state, tokenizer_dir, overwrite=overwrite)


def save_peft_adapter(out_dir: str, config: ModelConfig, params: Mapping[str, Any], base_model: str) -> None:
    """Writes adapter_model.safetensors + adapter_config.json that ``peft.PeftModel.from_pretrained`` loads
    onto the transformers model in ``base_model`` (atomically)."""
    state = FAMILIES[config.family].hf.peft_state_dict_from_params(params, config)
    save_peft_directory(out_dir, state, config.lora_rank, config.lora_alpha, config.lora_dropout, base_model)


def model_for(config: ModelConfig) -> Model:
    return FAMILIES[config.family].model(config)


def init_params(config: ModelConfig, rng: jax.Array) -> dict[str, Any]:
    """Random boxed parameters of ``model_for(config)`` (see ``EncoderDecoder.init_params``)."""
    return FAMILIES[config.family].model.init_params(config, rng)


def preset_config(size: str, **overrides: Any) -> ModelConfig:
    """A preset by name: T5's ``t5_config.SIZES`` or BART's ``bart_config.SIZES`` (the ``bart-*`` names)."""
    for family in FAMILIES.values():
        if size in family.configs.SIZES:
            return family.configs.get_config(size, **overrides)
    known = sorted(name for family in FAMILIES.values() for name in family.configs.SIZES)
    raise ConfigError(f"unknown model size {size!r}; known: {known}")


def num_params(config: ModelConfig) -> int:
    return FAMILIES[config.family].configs.num_params(config)


def flops_per_token(config: ModelConfig, input_len: int, target_len: int) -> float:
    """Training FLOPs per target token of one example (see ``t5_config.flops_per_token``)."""
    return FAMILIES[config.family].configs.flops_per_token(config, input_len, target_len)


def config_dict(config: ModelConfig) -> dict[str, Any]:
    """JSON-able description of ``config`` for checkpoint metadata, with its family."""
    return {"family": config.family, **dataclasses.asdict(config)}


def architecture_changes(saved: Mapping[str, Any], config: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """Shape-deciding fields that differ between a checkpoint's ``config_dict`` and ``config``: {field: (saved, now)}.

    Fields missing from ``saved`` (checkpoints older than the field, or than BART) take their defaults.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    defaults["family"] = "t5"
    fields = ("family",) + FAMILIES[config.family].configs.ARCHITECTURE_FIELDS + _TREE_FIELDS
    # Through JSON, as meta was saved: tuples compare as lists.
    was = json.loads(json.dumps({k: saved.get(k, defaults.get(k)) for k in fields}))
    now = json.loads(json.dumps({k: getattr(config, k) for k in fields}))
    return {k: (was[k], now[k]) for k in fields if was[k] != now[k]}
