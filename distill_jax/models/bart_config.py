"""BART student configuration, size presets, parameter counts and FLOP estimates.

Field names follow ``T5Config`` wherever the concept is shared (``d_model``, ``num_encoder_layers``,
``dropout_rate``, the token ids, the LoRA knobs, ...), so the trainer, decoder and LoRA code read
either config; the rest mirror ``transformers.BartConfig``. ``bart-base`` matches
``facebook/bart-base`` shape for shape, so a student can be warm-started from it through
``distill_jax.models.hf_bart``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from distill_jax.models.t5_config import ATTENTION_IMPLS, BYTE_VOCAB, LORA_TARGETS, REMAT_MODES

_ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu")
# transformers' BART builds every LayerNorm with torch's default epsilon; config.json cannot change it.
_HF_LAYER_NORM_EPS = 1e-5
# What transformers assumes for a key that config.json leaves out (BartConfig's defaults, i.e. bart-large).
_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50265,
    "max_position_embeddings": 1024,
    "encoder_layers": 12,
    "encoder_ffn_dim": 4096,
    "encoder_attention_heads": 16,
    "decoder_layers": 12,
    "decoder_ffn_dim": 4096,
    "decoder_attention_heads": 16,
    "activation_function": "gelu",
    "d_model": 1024,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "init_std": 0.02,
    "scale_embedding": False,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "forced_bos_token_id": None,  # Not a BartConfig field, but bart-large-style config.json files carry it.
    "forced_eos_token_id": 2,
    "tie_word_embeddings": True,
}
# Our field for each of those keys where the names differ (T5's names for the shared concepts).
_FIELD_OF_HF_KEY = {
    "encoder_layers": "num_encoder_layers",
    "decoder_layers": "num_decoder_layers",
    "dropout": "dropout_rate",
}


@dataclasses.dataclass(frozen=True)
class BartConfig:
    """Hyper-parameters of a BART encoder-decoder (post-LN, learned positions, GELU, biased projections).

    ``dropout_rate`` is BART's ``dropout`` (embeddings and every sublayer output); ``attention_dropout``
    and ``activation_dropout`` act on attention weights and inside the MLP. ``forced_bos_token_id`` and
    ``forced_eos_token_id`` are generation settings carried to and from Hugging Face only: this
    package's decoders force neither token. ``scan_layers``, ``remat``, ``dtype`` and ``param_dtype``
    mean what they mean for T5.
    """

    family: ClassVar[str] = "bart"

    vocab_size: int
    d_model: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    num_encoder_layers: int
    num_decoder_layers: int
    max_position_embeddings: int = 1024
    activation_function: str = "gelu"
    scale_embedding: bool = False  # Multiply token embeddings by sqrt(d_model).
    layer_norm_epsilon: float = _HF_LAYER_NORM_EPS
    dropout_rate: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    tie_word_embeddings: bool = True
    pad_token_id: int = 1
    bos_token_id: int | None = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2  # BART starts decoding from EOS.
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = False
    attention_impl: str = "einsum"  # One of ATTENTION_IMPLS, as in T5Config.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(f"activation_function={self.activation_function!r}: expected one of {_ACTIVATIONS}")
        for stack, heads in (("encoder", self.encoder_attention_heads), ("decoder", self.decoder_attention_heads)):
            if self.d_model % heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by {stack}_attention_heads={heads}")
        unknown = set(self.lora_targets) - set(LORA_TARGETS)
        if self.lora_rank < 0 or unknown:
            raise ValueError(
                f"LoRA: rank must be >= 0 (got {self.lora_rank}) and targets among {LORA_TARGETS} (got {unknown})"
            )
        # A tied head is the shared embedding: an adapter there could not be merged or exported as a head alone.
        if self.lora_rank and "lm_head" in self.lora_targets and self.tie_word_embeddings:
            raise ValueError("LoRA target lm_head needs an untied head (tie_word_embeddings=False) in BART")
        if self.remat not in REMAT_MODES:
            raise ValueError(f"remat={self.remat!r}: expected one of {REMAT_MODES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={self.attention_impl!r}: expected one of {ATTENTION_IMPLS}")

    @property
    def embedding_init_std(self) -> float:
        return self.init_std

    @property
    def embed_scale(self) -> float:
        return self.d_model**0.5 if self.scale_embedding else 1.0

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], **overrides: Any) -> BartConfig:
        """Builds a config from a transformers ``BartConfig`` dict (``config.json``); absent keys take its defaults."""
        hf = _HF_DEFAULTS | {k: v for k, v in d.items() if k in _HF_DEFAULTS}
        fields = {_FIELD_OF_HF_KEY.get(k, k): v for k, v in hf.items()}
        eos = hf["eos_token_id"][0] if isinstance(hf["eos_token_id"], (list, tuple)) else hf["eos_token_id"]
        fields.update(
            scale_embedding=bool(hf["scale_embedding"]),
            tie_word_embeddings=bool(hf["tie_word_embeddings"]),
            eos_token_id=eos,
            decoder_start_token_id=eos if hf["decoder_start_token_id"] is None else hf["decoder_start_token_id"],
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf_dict(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.BartConfig`` describing the same architecture."""
        if self.layer_norm_epsilon != _HF_LAYER_NORM_EPS:
            raise ValueError(
                f"layer_norm_epsilon={self.layer_norm_epsilon}: transformers' BART always uses {_HF_LAYER_NORM_EPS}"
            )
        return {
            "architectures": ["BartForConditionalGeneration"],
            "model_type": "bart",
            **{k: getattr(self, _FIELD_OF_HF_KEY.get(k, k)) for k in _HF_DEFAULTS},
            "is_encoder_decoder": True,
        }


def _shape(d_model: int, heads: int, ffn: int, layers: int) -> dict[str, int]:
    """The shape fields of a preset whose encoder and decoder are alike."""
    per_stack = {"{}_attention_heads": heads, "{}_ffn_dim": ffn, "num_{}_layers": layers}
    return {"d_model": d_model} | {k.format(s): v for k, v in per_stack.items() for s in ("encoder", "decoder")}


SIZES: dict[str, BartConfig] = {
    # ByT5's byte vocabulary and ids (pad 0, EOS 1, which BART also starts decoding from), like T5's tiny.
    "bart-tiny": BartConfig(
        vocab_size=BYTE_VOCAB,
        **_shape(128, 4, 256, 2),
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=1,
        decoder_start_token_id=1,
    ),
    "bart-base": BartConfig(vocab_size=50265, **_shape(768, 12, 3072, 6)),
}


# The fields that fix the parameter shapes (``family.architecture_changes`` compares them on resume).
ARCHITECTURE_FIELDS = (
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
)


def get_config(name: str, **overrides: Any) -> BartConfig:
    """Returns the preset ``name`` with any fields replaced by ``overrides``.

    Given only ``eos_token_id``, decoding also starts from it: BART's convention.
    """
    if name not in SIZES:
        raise ValueError(f"unknown BART size {name!r}; known: {sorted(SIZES)}")
    if "eos_token_id" in overrides:
        overrides = {"decoder_start_token_id": overrides["eos_token_id"]} | overrides
    return dataclasses.replace(SIZES[name], **overrides)


def _layer_norm_params(cfg: BartConfig) -> int:
    return 2 * cfg.d_model


def _attention_params(cfg: BartConfig) -> int:
    return 4 * (cfg.d_model * cfg.d_model + cfg.d_model)


def _mlp_params(cfg: BartConfig, ffn: int) -> int:
    return 2 * cfg.d_model * ffn + ffn + cfg.d_model


def num_params(cfg: BartConfig) -> int:
    """Exact number of parameters of ``BartTransformer(cfg)``: HF's count plus ``final_logits_bias``.

    transformers keeps that bias as a buffer; here it is a parameter (trained with full fine-tuning).
    """
    ln = _layer_norm_params(cfg)
    encoder_layer = _attention_params(cfg) + _mlp_params(cfg, cfg.encoder_ffn_dim) + 2 * ln
    decoder_layer = 2 * _attention_params(cfg) + _mlp_params(cfg, cfg.decoder_ffn_dim) + 3 * ln
    embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_word_embeddings else 2) + cfg.vocab_size
    positions = 2 * ((cfg.max_position_embeddings + 2) * cfg.d_model + ln)
    return embeddings + positions + cfg.num_encoder_layers * encoder_layer + cfg.num_decoder_layers * decoder_layer


def flops_per_token(cfg: BartConfig, input_len: int, target_len: int) -> float:
    """Training FLOPs (forward + backward) per target token of one example, for MFU.

    ``t5_config.flops_per_token``'s count with attention width ``A = d_model`` and per-stack MLP
    widths: with ``S = input_len``, ``T = target_len``, ``F_enc``/``F_dec`` the FFN dims,

      encoder:  S * L_enc * (2 * (4 * d_model * A + 2 * d_model * F_enc) + 4 * S * A)
      decoder:  T * L_dec * (2 * (6 * d_model * A + 2 * d_model * F_dec) + 4 * T * A + 4 * S * A)
                + S * L_dec * 2 * (2 * d_model * A)          # cross-attention keys/values
      LM head:  T * 2 * d_model * vocab_size

    times 3 for training, divided by ``T``; biases, norms, embeddings and softmax are ignored.
    """
    d = cfg.d_model
    encoder = input_len * cfg.num_encoder_layers * (2 * (4 * d * d + 2 * d * cfg.encoder_ffn_dim) + 4 * input_len * d)
    decoder = (
        target_len
        * cfg.num_decoder_layers
        * (2 * (6 * d * d + 2 * d * cfg.decoder_ffn_dim) + 4 * (target_len + input_len) * d)
        + input_len * cfg.num_decoder_layers * 4 * d * d
    )
    head = target_len * 2 * d * cfg.vocab_size
    return 3.0 * (encoder + decoder + head) / target_len
