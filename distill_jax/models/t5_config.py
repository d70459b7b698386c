"""T5 student configuration, size presets, parameter counts and FLOP estimates.

The presets match the public Google checkpoints shape for shape (``google/t5-v1_1-*`` and
``google/flan-t5-*`` share them; ``t5-small`` is the original v1.0 recipe), so a student can
be warm-started from any of them through ``distill_jax.models.hf_t5``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

_ACTIVATIONS = ("relu", "gelu", "silu")
REMAT_MODES = ("none", "full", "dots_saveable")
# How attention is computed (attention.attend): "einsum", our heads-major products (fastest on XLA CPU,
# measured); "jax", jax.nn.dot_product_attention, which takes cuDNN's fused kernel on GPU where it
# applies (bf16/fp16) and XLA's elsewhere.
ATTENTION_IMPLS = ("einsum", "jax")
_T5_VOCAB = 32128
LORA_TARGETS = ("q", "k", "v", "o", "wi", "wo", "lm_head")
# ByT5's byte vocabulary (3 specials + 256 bytes + 125 sentinels): transformers.ByT5Tokenizer()
# needs no files, so the tiny preset trains end to end offline.
BYTE_VOCAB = 384
# config.json keys that are our field names too: the required ones, and the others with the default
# transformers assumes when a file leaves them out.
_HF_REQUIRED = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads")
_HF_DEFAULTS: dict[str, Any] = {
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu",
    "pad_token_id": 0,
    "eos_token_id": 1,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of a T5 encoder-decoder.

    ``tie_word_embeddings`` follows the v1.0 convention: the LM head reuses the shared embedding
    and the decoder output is scaled by ``d_model**-0.5`` first; v1.1/Flan/ByT5 use an untied,
    unscaled head. ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype; ``remat``
    selects the ``jax.checkpoint`` policy applied to every layer; ``scan_layers`` runs each stack's
    layers as one ``nn.scan`` over parameters stacked along a leading "layers" axis.
    """

    family: ClassVar[str] = "t5"

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"
    tie_word_embeddings: bool = False
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = False
    attention_impl: str = "einsum"  # One of ATTENTION_IMPLS: how, not what; any checkpoint fits either.
    lora_rank: int = 0  # > 0 adds LoRA adapters to lora_targets and trains only them.
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        act = self.feed_forward_proj.removeprefix("gated-")
        if act not in _ACTIVATIONS:
            raise ValueError(
                f"feed_forward_proj={self.feed_forward_proj!r}: expected one of "
                f"{_ACTIVATIONS} optionally prefixed with 'gated-'"
            )
        unknown = set(self.lora_targets) - set(LORA_TARGETS)
        if self.lora_rank < 0 or unknown:
            raise ValueError(
                f"LoRA: rank must be >= 0 (got {self.lora_rank}) and targets among {LORA_TARGETS} (got {unknown})"
            )
        if self.remat not in REMAT_MODES:
            raise ValueError(f"remat={self.remat!r}: expected one of {REMAT_MODES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={self.attention_impl!r}: expected one of {ATTENTION_IMPLS}")
        # The log-spaced buckets span [num_buckets // 2, max_distance); a shorter range is degenerate.
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 2:
            raise ValueError(
                "relative_attention_max_distance must exceed relative_attention_num_buckets // 2, got "
                f"{self.relative_attention_max_distance} <= {self.relative_attention_num_buckets // 2}"
            )

    @property
    def embedding_init_std(self) -> float:
        """The shared token embedding starts at N(0, 1), as in mesh-tf and HF's T5 init."""
        return 1.0

    @property
    def is_gated_act(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def dense_act_fn(self) -> str:
        """Activation name as transformers spells it (``gated-gelu`` means the tanh ``gelu_new``)."""
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.removeprefix("gated-")

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], **overrides: Any) -> T5Config:
        """Builds a config from a transformers ``T5Config`` dict (``config.json``).

        transformers >= 5 always writes ``tie_word_embeddings: true`` and records the v1.0/v1.1
        distinction as ``scale_decoder_outputs``; older files only carry ``tie_word_embeddings``.
        """
        fields = {k: d[k] for k in _HF_REQUIRED} | {k: d.get(k, v) for k, v in _HF_DEFAULTS.items()}
        if isinstance(fields["eos_token_id"], (list, tuple)):
            fields["eos_token_id"] = fields["eos_token_id"][0]
        start = d.get("decoder_start_token_id")
        fields.update(
            num_encoder_layers=d["num_layers"],
            num_decoder_layers=d.get("num_decoder_layers") or d["num_layers"],
            tie_word_embeddings=bool(d.get("scale_decoder_outputs", d.get("tie_word_embeddings", True))),
            decoder_start_token_id=fields["pad_token_id"] if start is None else start,
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf_dict(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.T5Config`` describing the same architecture."""
        same = (*_HF_REQUIRED, *_HF_DEFAULTS, "decoder_start_token_id", "tie_word_embeddings")
        return {
            "architectures": ["T5ForConditionalGeneration"],
            **{k: getattr(self, k) for k in same + ("is_gated_act", "dense_act_fn")},
            "num_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "is_encoder_decoder": True,
        }


_V1_0 = dict(vocab_size=_T5_VOCAB, d_kv=64, feed_forward_proj="relu", tie_word_embeddings=True)
_V1_1 = dict(vocab_size=_T5_VOCAB, d_kv=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
_BYTES = dict(vocab_size=BYTE_VOCAB, feed_forward_proj="gated-gelu", tie_word_embeddings=False)

SIZES: dict[str, T5Config] = {
    "tiny": T5Config(d_model=128, d_kv=32, d_ff=256, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, **_BYTES),
    "small": T5Config(d_model=512, d_ff=1024, num_heads=6, num_encoder_layers=8, num_decoder_layers=8, **_V1_1),
    "base": T5Config(d_model=768, d_ff=2048, num_heads=12, num_encoder_layers=12, num_decoder_layers=12, **_V1_1),
    "large": T5Config(d_model=1024, d_ff=2816, num_heads=16, num_encoder_layers=24, num_decoder_layers=24, **_V1_1),
    "xl": T5Config(d_model=2048, d_ff=5120, num_heads=32, num_encoder_layers=24, num_decoder_layers=24, **_V1_1),
    "t5-small-v1.0": T5Config(d_model=512, d_ff=2048, num_heads=8, num_encoder_layers=6, num_decoder_layers=6, **_V1_0),
}


# The fields that fix the parameter shapes (``family.architecture_changes`` compares them on resume).
ARCHITECTURE_FIELDS = (
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
)


def get_config(name: str, **overrides: Any) -> T5Config:
    """Returns the preset ``name`` with any fields replaced by ``overrides``."""
    if name not in SIZES:
        raise ValueError(f"unknown T5 size {name!r}; known: {sorted(SIZES)}")
    return dataclasses.replace(SIZES[name], **overrides)


def _attention_params(cfg: T5Config) -> int:
    return 4 * cfg.d_model * cfg.num_heads * cfg.d_kv


def _mlp_params(cfg: T5Config) -> int:
    return (3 if cfg.is_gated_act else 2) * cfg.d_model * cfg.d_ff


def num_params(cfg: T5Config) -> int:
    """Exact number of parameters of ``T5Transformer(cfg)`` (shared embedding counted once)."""
    relpos = cfg.relative_attention_num_buckets * cfg.num_heads
    encoder_layer = 2 * cfg.d_model + _attention_params(cfg) + _mlp_params(cfg)
    decoder_layer = 3 * cfg.d_model + 2 * _attention_params(cfg) + _mlp_params(cfg)
    embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_word_embeddings else 2)
    return (
        embeddings
        + 2 * (relpos + cfg.d_model)
        + cfg.num_encoder_layers * encoder_layer
        + cfg.num_decoder_layers * decoder_layer
    )


def flops_per_token(cfg: T5Config, input_len: int, target_len: int) -> float:
    """Training FLOPs (forward + backward) per target token of one example, for MFU.

    With ``A = num_heads * d_kv``, ``P_mlp`` the MLP weights of one layer, ``S = input_len``
    and ``T = target_len``, a multiply-add counting as 2 FLOPs, the forward pass costs

      encoder:  S * L_enc * (2 * (4 * d_model * A + P_mlp) + 4 * S * A)
      decoder:  T * L_dec * (2 * (6 * d_model * A + P_mlp) + 4 * T * A + 4 * S * A)
                + S * L_dec * 2 * (2 * d_model * A)          # cross-attention keys/values
      LM head:  T * 2 * d_model * vocab_size

    (attention terms count the full score matrix, ignoring causal sparsity; embedding lookups,
    norms and softmax are ignored). Training is 3x the forward pass, and the total is divided
    by ``T``: the encoder cost is amortised over the example's target tokens, so
    ``MFU = flops_per_token * target_tokens_per_second / peak_flops``.
    """
    attn_width = cfg.num_heads * cfg.d_kv
    mlp = _mlp_params(cfg)
    encoder = (
        input_len * cfg.num_encoder_layers * (2 * (4 * cfg.d_model * attn_width + mlp) + 4 * input_len * attn_width)
    )
    decoder = (
        target_len
        * cfg.num_decoder_layers
        * (2 * (6 * cfg.d_model * attn_width + mlp) + 4 * (target_len + input_len) * attn_width)
        + input_len * cfg.num_decoder_layers * 4 * cfg.d_model * attn_width
    )
    head = target_len * 2 * cfg.d_model * cfg.vocab_size
    return 3.0 * (encoder + decoder + head) / target_len
