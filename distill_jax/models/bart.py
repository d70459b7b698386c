"""Flax (linen) BART encoder-decoder, numerically identical to transformers' BartForConditionalGeneration.

Design notes:
  * Architecture follows HF BART: token embedding (optionally scaled by sqrt(d_model)) plus a
    learned position embedding looked up at ``position + 2`` (fairseq's offset, kept so HF tables
    import as they are), ``layernorm_embedding``, post-LN residual blocks, scaled dot-product
    attention and an MLP, every projection with a bias; float32 logits from the head tied to the
    shared embedding plus ``final_logits_bias``.
  * The public surface is ``T5Transformer``'s: ``encode``/``decode``/``__call__`` with the same
    arguments, segment ids (0 = padding) and in-segment positions for packed rows, the decode
    cache in the ``"cache"`` collection, ``scan_layers`` and ``remat``. Decode-cache module names
    match T5's (``self_attention``, ``encoder_decoder_attention``), so ``decoding.py`` reorders beams
    the same way.
  * Every parameter carries logical axis names; LoRA adapters sit inside the projection they adapt
    (q, k, v, o, wi = fc1, wo = fc2, lm_head when untied), so ``lora.py`` works unchanged.

Parameter tree: ``token_embedder/embedding``; ``encoder/{position_embedder, embedding_norm,
layers_<i>/{attention, attention_norm, mlp, mlp_norm}}``; ``decoder/{position_embedder,
embedding_norm, layers_<i>/{self_attention, self_attention_norm, encoder_decoder_attention,
encoder_decoder_attention_norm, mlp, mlp_norm}, logits_bias}`` plus ``decoder/logits_dense`` for an
untied head. Attention projections are ``query``/``key``/``value``/``out`` with 3-D kernels like T5's.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models.attention import (
    CachedKeysValues,
    attend,
    causal_mask,
    cross_mask,
    default_positions,
    mask_bias,
    padding_mask,
    step_mask,
)
from distill_jax.models.bart_config import BartConfig
from distill_jax.models.encoder_decoder import EncoderDecoder, maybe_remat, run_layers, start_decode_step
from distill_jax.models.layers import ACTIVATIONS, Dense, compute_dtypes, constrain, lm_logits, normal_init

Array = jax.Array
# fairseq reserved the first two rows of the position table; HF keeps them, so position p reads row p + 2.
POSITION_OFFSET = 2


def _dense(
    cfg: BartConfig,
    inputs: tuple[tuple[int, ...], tuple[str, ...]],
    outputs: tuple[tuple[int, ...], tuple[str, ...]],
    lora_target: str,
    name: str,
) -> Dense:
    """A BART projection: biased, initialised with ``init_std``."""
    return Dense(cfg, *inputs, *outputs, cfg.init_std, lora_target, use_bias=True, name=name)


def _layer_norm(cfg: BartConfig, name: str) -> nn.LayerNorm:
    """torch's LayerNorm: statistics in float32 from the centred values (not E[x^2] - E[x]^2)."""
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_epsilon,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
        **compute_dtypes(cfg),
    )


class Attention(CachedKeysValues):
    """BART attention (scaled dot product, biased projections) with ``CachedKeysValues``' decode cache."""

    config: BartConfig
    num_heads: int
    cross_attention: bool = False

    def _project(self, name: str, x: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        heads = ((self.num_heads, cfg.d_model // self.num_heads), ("heads", "kv"))
        y = _dense(cfg, ((cfg.d_model,), ("embed",)), heads, name[0], name)(x, enable_dropout)
        return constrain(y, ("batch", "length", "heads", "kv"))

    def _keys_values(self, inputs_kv: Array, enable_dropout: bool = False) -> tuple[Array, Array]:
        return self._project("key", inputs_kv, enable_dropout), self._project("value", inputs_kv, enable_dropout)

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        attention_bias: Array,
        enable_dropout: bool = False,
        decode: bool = False,
        cache_index: Array | None = None,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        query = self._project("query", inputs_q, enable_dropout)
        key, value = self.keys_values(inputs_kv, enable_dropout, decode, cache_index, max_decode_length)

        active = enable_dropout and cfg.attention_dropout
        dropout = nn.Dropout(cfg.attention_dropout, deterministic=False) if active else None
        scale = query.shape[-1] ** -0.5
        out = attend(query, key, value, (attention_bias,), scale=scale, impl=cfg.attention_impl, dropout=dropout)
        out = constrain(out, ("batch", "length", "heads", "kv"))
        heads = ((self.num_heads, cfg.d_model // self.num_heads), ("heads", "kv"))
        return _dense(cfg, heads, ((cfg.d_model,), ("embed",)), "o", "out")(out, enable_dropout)


class Mlp(nn.Module):
    """``fc2(dropout(act(fc1 x)))``; fc1/fc2 are LoRA targets ``wi``/``wo`` as in T5."""

    config: BartConfig
    ffn_dim: int

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        d, f = ((cfg.d_model,), ("embed",)), ((self.ffn_dim,), ("mlp",))
        h = ACTIVATIONS[cfg.activation_function](_dense(cfg, d, f, "wi", "wi")(x, enable_dropout))
        h = constrain(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.activation_dropout)(h, deterministic=not enable_dropout)
        return _dense(cfg, f, d, "wo", "wo")(h, enable_dropout)


def _post_norm(cfg: BartConfig, name: str, x: Array, y: Array, enable_dropout: bool) -> Array:
    """``norm(x + dropout(y))``, how every BART sublayer output rejoins the stream; the norm is named ``name``."""
    y = nn.Dropout(cfg.dropout_rate)(y, deterministic=not enable_dropout)
    return constrain(_layer_norm(cfg, name)(x + y), ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    """Self-attention then MLP, each post-normed (HF ``BartEncoderLayer``)."""

    config: BartConfig

    @nn.compact
    def __call__(self, x: Array, attention_bias: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        y = Attention(cfg, cfg.encoder_attention_heads, name="attention")(x, x, attention_bias, enable_dropout)
        x = _post_norm(cfg, "attention_norm", x, y, enable_dropout)
        y = Mlp(cfg, cfg.encoder_ffn_dim, name="mlp")(x, enable_dropout)
        return _post_norm(cfg, "mlp_norm", x, y, enable_dropout)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, MLP, each post-normed (HF ``BartDecoderLayer``)."""

    config: BartConfig

    @nn.compact
    def __call__(
        self,
        x: Array,
        encoded: Array,
        self_attention_bias: Array,
        cross_attention_bias: Array,
        enable_dropout: bool = False,
        decode: bool = False,
        cache_index: Array | None = None,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        heads = cfg.decoder_attention_heads
        y = Attention(cfg, heads, name="self_attention")(
            x, x, self_attention_bias, enable_dropout, decode, cache_index, max_decode_length
        )
        x = _post_norm(cfg, "self_attention_norm", x, y, enable_dropout)
        y = Attention(cfg, heads, cross_attention=True, name="encoder_decoder_attention")(
            x, encoded, cross_attention_bias, enable_dropout, decode
        )
        x = _post_norm(cfg, "encoder_decoder_attention_norm", x, y, enable_dropout)
        y = Mlp(cfg, cfg.decoder_ffn_dim, name="mlp")(x, enable_dropout)
        return _post_norm(cfg, "mlp_norm", x, y, enable_dropout)


def _check_length(cfg: BartConfig, length: int, what: str) -> None:
    # Beyond the table a gather would silently read NaNs (JAX fills out-of-bounds rows).
    if length > cfg.max_position_embeddings:
        raise ValueError(f"{what} of length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}")


def _embed(
    cfg: BartConfig, shared_embedding: nn.Module, tokens: Array, positions: Array, enable_dropout: bool
) -> Array:
    """Scaled token embedding + learned position embedding, ``layernorm_embedding``, dropout.

    Called inside a stack's compact ``__call__``: the position table and the norm become that stack's
    ``position_embedder`` and ``embedding_norm``.
    """
    position_table = nn.Embed(
        num_embeddings=cfg.max_position_embeddings + POSITION_OFFSET,
        features=cfg.d_model,
        embedding_init=normal_init(cfg.init_std, ("positions", "embed")),
        name="position_embedder",
        **compute_dtypes(cfg),
    )
    x = shared_embedding(tokens.astype(jnp.int32)) * cfg.embed_scale
    x = x + position_table(positions + POSITION_OFFSET)
    x = _layer_norm(cfg, "embedding_norm")(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    return constrain(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
    """Encoder stack: embeddings, post-LN layers (BART has no final norm)."""

    config: BartConfig
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
        _check_length(cfg, tokens.shape[1], "encoder input")
        if positions is None:
            positions = default_positions(tokens.shape[1])
        x = _embed(cfg, self.shared_embedding, tokens, positions, enable_dropout)
        bias = mask_bias(padding_mask(tokens, segment_ids, cfg.pad_token_id))
        layer_cls = maybe_remat(EncoderLayer, cfg, enable_dropout_argnum=3)
        return run_layers(layer_cls, cfg, cfg.num_encoder_layers, x, bias, enable_dropout)


class Decoder(nn.Module):
    """Decoder stack plus LM head.

    ``decode=True`` processes a single step ([B, 1] tokens): the step number lives in the
    ``cache/decoder/cache_index`` variable and is both the query's position and where each layer
    writes its keys/values. All cache variables are created on the first such call.
    """

    config: BartConfig
    shared_embedding: nn.Module

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
            _check_length(cfg, max_decode_length, "decoding")
            decoder_positions = cache_index[None, None]
            self_mask = step_mask(cache_index, max_decode_length)
        else:
            length = decoder_tokens.shape[1]
            _check_length(cfg, length, "decoder input")
            self_mask = causal_mask(length, decoder_segment_ids)
            if decoder_positions is None:
                decoder_positions = default_positions(length)
        mask = cross_mask(encoder_tokens, encoder_segment_ids, decoder_segment_ids, cfg.pad_token_id, decode)

        x = _embed(cfg, self.shared_embedding, decoder_tokens, decoder_positions, enable_dropout)
        # Rematerialisation only pays off when a backward pass follows, never in cached decoding.
        layer_cls = DecoderLayer if decode else maybe_remat(DecoderLayer, cfg, enable_dropout_argnum=5)
        args = (encoded, mask_bias(self_mask), mask_bias(mask), enable_dropout)
        if decode:
            args += (True, cache_index, max_decode_length)
        x = run_layers(layer_cls, cfg, cfg.num_decoder_layers, x, *args)
        return self._logits(x, enable_dropout)

    def _logits(self, x: Array, enable_dropout: bool) -> Array:
        """LM head in the compute dtype with float32 accumulation, plus ``final_logits_bias``, float32 out."""
        cfg = self.config
        logits = lm_logits(cfg, self.shared_embedding, x, cfg.init_std, enable_dropout)
        bias = self.param(
            "logits_bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (cfg.vocab_size,),
            compute_dtypes(cfg)["param_dtype"],
        )
        return constrain(logits.astype(jnp.float32) + bias.astype(jnp.float32), ("batch", "length", "vocab"))


class BartTransformer(EncoderDecoder):
    """BART encoder-decoder returning float32 logits; the same interface as ``T5Transformer``.

    Without segment ids, encoder padding is ``tokens == pad_token_id`` and the decoder uses a plain
    causal mask (as HF does when no decoder attention mask is given). With segment ids (0 = padding)
    attention stays inside each segment and ``*_positions`` restart per segment, which makes packed
    rows equivalent to separate rows.
    """

    config: BartConfig
    encoder_cls = Encoder
    decoder_cls = Decoder


def init_params(
    config: BartConfig, rng: Array, batch_size: int = 1, input_len: int = 8, target_len: int = 8
) -> dict[str, Any]:
    """Randomly initialised parameters, boxed in ``nn.Partitioned`` (logical axis names), like ``t5.init_params``."""
    model = BartTransformer(config)
    encoder_tokens = jnp.ones((batch_size, input_len), jnp.int32)
    decoder_tokens = jnp.ones((batch_size, target_len), jnp.int32)
    return jax.jit(model.init)({"params": rng}, encoder_tokens, decoder_tokens)["params"]
