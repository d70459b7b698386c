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

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models.attention import causal_mask, cross_mask, default_positions, mask_bias, padding_mask, step_mask
from distill_jax.models.encoder_decoder import EncoderDecoder, maybe_remat, run_layers, start_decode_step
from distill_jax.models.layers import (
    MlpBlock,
    MultiHeadAttention,
    RelativePositionBias,
    RMSNorm,
    constrain,
    lm_logits,
)
from distill_jax.models.t5_config import T5Config

Array = jax.Array


class _Residual(nn.Module):
    """Dropout on a sublayer output before adding it back, as in every HF T5 sublayer."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, y: Array, enable_dropout: bool) -> Array:
        y = nn.Dropout(self.config.dropout_rate)(y, deterministic=not enable_dropout)
        return constrain(x + y, ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    """Self-attention then MLP, each pre-normed and residual (HF ``T5Block`` of the encoder)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, attention_biases: Sequence[Array], enable_dropout: bool = False) -> Array:
        cfg = self.config
        y = RMSNorm(cfg, name="pre_attention_layer_norm")(x)
        y = MultiHeadAttention(cfg, name="attention")(y, y, attention_biases, enable_dropout)
        x = _Residual(cfg)(x, y, enable_dropout)
        y = MlpBlock(cfg, name="mlp")(RMSNorm(cfg, name="pre_mlp_layer_norm")(x), enable_dropout)
        return _Residual(cfg)(x, y, enable_dropout)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, MLP (HF ``T5Block`` of the decoder)."""

    config: T5Config

    @nn.compact
    def __call__(
        self,
        x: Array,
        encoded: Array,
        self_attention_biases: Sequence[Array],
        cross_attention_biases: Sequence[Array],
        enable_dropout: bool = False,
        decode: bool = False,
        cache_index: Array | None = None,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        y = RMSNorm(cfg, name="pre_self_attention_layer_norm")(x)
        y = MultiHeadAttention(cfg, name="self_attention")(
            y, y, self_attention_biases, enable_dropout, decode, cache_index, max_decode_length
        )
        x = _Residual(cfg)(x, y, enable_dropout)
        y = RMSNorm(cfg, name="pre_cross_attention_layer_norm")(x)
        y = MultiHeadAttention(cfg, cross_attention=True, name="encoder_decoder_attention")(
            y, encoded, cross_attention_biases, enable_dropout, decode
        )
        x = _Residual(cfg)(x, y, enable_dropout)
        y = MlpBlock(cfg, name="mlp")(RMSNorm(cfg, name="pre_mlp_layer_norm")(x), enable_dropout)
        return _Residual(cfg)(x, y, enable_dropout)


# ----------------------------------------------------------------------------------------------
# Stacks
# ----------------------------------------------------------------------------------------------


def _embed(cfg: T5Config, shared_embedding: nn.Module, tokens: Array, enable_dropout: bool) -> Array:
    """The shared token embedding with dropout, as both stacks start (T5 has no position embedding)."""
    x = shared_embedding(tokens.astype(jnp.int32))
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    return constrain(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
    """Encoder stack: shared embedding, layers, final RMSNorm; bias and masks built once."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        cfg = self.config
        mask = padding_mask(tokens, segment_ids, cfg.pad_token_id)
        if positions is None:
            positions = default_positions(tokens.shape[1])
        relpos = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(positions, positions)
        attention_biases = (relpos, mask_bias(mask))

        x = _embed(cfg, self.shared_embedding, tokens, enable_dropout)
        layer_cls = maybe_remat(EncoderLayer, cfg, enable_dropout_argnum=3)
        x = run_layers(layer_cls, cfg, cfg.num_encoder_layers, x, attention_biases, enable_dropout)
        x = RMSNorm(cfg, name="encoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        return constrain(x, ("batch", "length", "embed"))


class Decoder(nn.Module):
    """Decoder stack plus LM head.

    ``decode=True`` processes a single step ([B, 1] tokens): the step number lives in the
    ``cache/decoder/cache_index`` variable, which sets both the relative position of the query
    and where each layer writes its keys/values. All cache variables are created, zeroed (the
    cross-attention ones filled from ``encoded``), on the first such call.
    """

    config: T5Config
    shared_embedding: nn.Module

    def _step_biases(self, cache_index: Array, max_decode_length: int) -> tuple[Array, Array]:
        """Self-attention biases of the current step against the whole cache."""
        key_positions = default_positions(max_decode_length)
        relpos = RelativePositionBias(self.config, bidirectional=False, name="relpos_bias")(
            cache_index[None, None], key_positions
        )
        return relpos, mask_bias(step_mask(cache_index, max_decode_length))

    def _full_biases(self, length: int, segment_ids: Array | None, positions: Array | None) -> tuple[Array, Array]:
        if positions is None:
            positions = default_positions(length)
        relpos = RelativePositionBias(self.config, bidirectional=False, name="relpos_bias")(positions, positions)
        return relpos, mask_bias(causal_mask(length, segment_ids))

    @nn.compact
    def __call__(
        self,
        encoded: Array,
        encoder_tokens: Array,
        decoder_tokens: Array,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        cache_index = None
        if decode:
            cache_index = start_decode_step(
                self, decoder_tokens, decoder_segment_ids, decoder_positions, max_decode_length
            )
            self_biases = self._step_biases(cache_index, max_decode_length)
        else:
            self_biases = self._full_biases(decoder_tokens.shape[1], decoder_segment_ids, decoder_positions)
        mask = cross_mask(encoder_tokens, encoder_segment_ids, decoder_segment_ids, cfg.pad_token_id, decode)
        cross_biases = (mask_bias(mask),)

        x = _embed(cfg, self.shared_embedding, decoder_tokens, enable_dropout)
        # Rematerialisation only pays off when a backward pass follows, never in cached decoding.
        layer_cls = DecoderLayer if decode else maybe_remat(DecoderLayer, cfg, enable_dropout_argnum=5)
        args = (encoded, self_biases, cross_biases, enable_dropout)
        if decode:
            args += (True, cache_index, max_decode_length)
        x = run_layers(layer_cls, cfg, cfg.num_decoder_layers, x, *args)
        x = RMSNorm(cfg, name="decoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        return self._logits(x, enable_dropout)

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


def init_params(
    config: T5Config, rng: Array, batch_size: int = 1, input_len: int = 8, target_len: int = 8
) -> dict[str, Any]:
    """Randomly initialised parameters, boxed in ``nn.Partitioned`` (logical axis names).

    Use ``nn.get_partition_spec`` / ``nn.logical_to_mesh_sharding`` for shardings and
    ``nn.meta.unbox`` for plain arrays; ``jax.eval_shape`` of this gives shapes without memory.
    """
    model = T5Transformer(config)
    encoder_tokens = jnp.ones((batch_size, input_len), jnp.int32)
    decoder_tokens = jnp.ones((batch_size, target_len), jnp.int32)
    return jax.jit(model.init)({"params": rng}, encoder_tokens, decoder_tokens)["params"]
