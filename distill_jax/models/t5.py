"""Flax (linen) T5 encoder-decoder, numerically identical to transformers' T5ForConditionalGeneration.

Design notes:
  * Architecture follows HF/mesh-tf T5: pre-norm residual blocks with RMSNorm, no 1/sqrt(d)
    attention scaling (folded into the query init), bucketed relative position bias computed
    once per stack and shared by all its layers, shared input embedding.
  * Every parameter carries logical axis names and activations are constrained with logical
    names, so the trainer can shard it by wrapping calls in ``nn.logical_axis_rules``.
  * Packed examples are supported through segment ids (0 = padding) and in-segment positions.
  * ``decode=True`` runs one decoder step against a KV cache in the ``"cache"`` collection
    (see ``Decoder`` and ``distill_jax.models.decoding``).

Parameter tree: ``token_embedder/embedding``; ``encoder/{relpos_bias, layers_<i>, encoder_norm}``;
``decoder/{relpos_bias, layers_<i>, decoder_norm, logits_dense}`` (``logits_dense`` only when the
embeddings are untied). With ``scan_layers`` each stack holds one ``layers`` subtree instead, every
leaf stacked on a leading "layers" axis (``stack_layers``/``unstack_layers`` convert); the decode
cache is stacked the same way.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import stacks
from distill_jax.models.attention import causal_mask, default_positions, mask_bias, step_mask
from distill_jax.models.encoder_decoder import EncoderDecoder
from distill_jax.models.layers import (
    MlpBlock,
    MultiHeadAttention,
    RelativePositionBias,
    RMSNorm,
    constrain,
    lm_logits,
)
from distill_jax.models.stacks import Sublayer
from distill_jax.models.t5_config import T5Config

Array = jax.Array


class _Residual(nn.Module):
    """Dropout on a sublayer output before adding it back, as in every HF T5 sublayer."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, y: Array, enable_dropout: bool) -> Array:
        y = nn.Dropout(self.config.dropout_rate)(y, deterministic=not enable_dropout)
        return constrain(x + y, ("batch", "length", "embed"))


class _Sublayers:
    """T5's layer parts (mixed into both layers): pre-RMSNorm residual sublayers, ``MultiHeadAttention``, ``MlpBlock``."""

    def _attention(self, name: str, cross_attention: bool = False) -> nn.Module:
        return MultiHeadAttention(self.config, cross_attention=cross_attention, name=name)

    def _mlp(self) -> nn.Module:
        return MlpBlock(self.config, name="mlp")

    def _sublayer(self, norm: str, x: Array, sublayer: Sublayer, enable_dropout: bool) -> Array:
        y = sublayer(RMSNorm(self.config, name=norm)(x))
        return _Residual(self.config)(x, y, enable_dropout)


class EncoderLayer(_Sublayers, stacks.EncoderLayer):
    """Self-attention then MLP, each pre-normed and residual (HF ``T5Block`` of the encoder)."""

    config: T5Config
    norms = ("pre_attention_layer_norm", "pre_mlp_layer_norm")


class DecoderLayer(_Sublayers, stacks.DecoderLayer):
    """Causal self-attention, cross-attention, MLP (HF ``T5Block`` of the decoder)."""

    config: T5Config
    norms = ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm", "pre_mlp_layer_norm")


# ----------------------------------------------------------------------------------------------
# Stacks
# ----------------------------------------------------------------------------------------------


class _Ends:
    """How both T5 stacks start and end (mixed into both): the shared embedding with dropout (T5 has no
    position embedding), and a final RMSNorm (called ``final_norm``) with dropout."""

    final_norm: ClassVar[str]

    def _embed(self, tokens: Array, positions: Array, enable_dropout: bool) -> Array:
        x = self.shared_embedding(tokens.astype(jnp.int32))
        x = nn.Dropout(self.config.dropout_rate)(x, deterministic=not enable_dropout)
        return constrain(x, ("batch", "length", "embed"))

    def _finish(self, x: Array, enable_dropout: bool) -> Array:
        x = RMSNorm(self.config, name=self.final_norm)(x)
        x = nn.Dropout(self.config.dropout_rate)(x, deterministic=not enable_dropout)
        return constrain(x, ("batch", "length", "embed"))


class Encoder(_Ends, stacks.EncoderStack):
    """Encoder stack: shared embedding, layers, final RMSNorm; the relative position bias built once."""

    config: T5Config
    layer_cls = EncoderLayer
    final_norm = "encoder_norm"

    def _biases(self, positions: Array, mask: Array) -> tuple[Array, Array]:
        relpos = RelativePositionBias(self.config, bidirectional=True, name="relpos_bias")(positions, positions)
        return relpos, mask_bias(mask)


class Decoder(_Ends, stacks.DecoderStack):
    """Decoder stack plus LM head; in cached decoding the step sets the relative position of the query."""

    config: T5Config
    layer_cls = DecoderLayer
    final_norm = "decoder_norm"

    def _step_biases(self, cache_index: Array, max_decode_length: int) -> tuple[Array, Array]:
        key_positions = default_positions(max_decode_length)
        relpos = RelativePositionBias(self.config, bidirectional=False, name="relpos_bias")(
            cache_index[None, None], key_positions
        )
        return relpos, mask_bias(step_mask(cache_index, max_decode_length))

    def _full_biases(self, length: int, segment_ids: Array | None, positions: Array) -> tuple[Array, Array]:
        relpos = RelativePositionBias(self.config, bidirectional=False, name="relpos_bias")(positions, positions)
        return relpos, mask_bias(causal_mask(length, segment_ids))

    def _logits(self, x: Array, enable_dropout: bool) -> Array:
        """LM head in the compute dtype with float32 accumulation and output."""
        cfg = self.config
        if cfg.tie_word_embeddings:  # mesh-tf's rescaling before the tied head
            x = x * (cfg.d_model**-0.5)
        logits = lm_logits(cfg, self.shared_embedding, x, cfg.d_model**-0.5, enable_dropout)
        return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class T5Transformer(EncoderDecoder):
    """T5 encoder-decoder returning float32 logits.

    Without segment ids, encoder padding is ``tokens == pad_token_id`` and the decoder uses a
    plain causal mask (its first input is the start token, which is the pad id in T5; padded
    target positions only ever see earlier positions). With segment ids (0 = padding) attention
    is restricted to the same segment, which makes packed rows equivalent to separate rows.
    """

    config: T5Config
    encoder_cls = Encoder
    decoder_cls = Decoder
