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
embeddings are untied).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.models.lora import ADAPTER, LoraAdapter, adapts
from distill_jax.models.t5_config import T5Config

Array = jax.Array

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
}
# Added to masked attention scores; the most negative float32, as HF uses.
_MASKED = float(np.finfo(np.float32).min)


def _normal(stddev: float, names: tuple[str, ...]) -> Callable[..., Any]:
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def _constrain(x: Array, names: tuple[str, ...]) -> Array:
    return nn.with_logical_constraint(x, names)


def _dtypes(cfg: T5Config) -> dict[str, Any]:
    return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


# ----------------------------------------------------------------------------------------------
# Relative position buckets
# ----------------------------------------------------------------------------------------------


@functools.cache
def _distance_buckets(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every distance in [0, max_distance]; longer distances share the last entry.

    Half the buckets are exact distances, the rest log-spaced up to ``max_distance``. The
    log formula is evaluated in float32 in HF's operation order so boundary distances land
    in the same bucket as in HF; tabulating it keeps float rounding out of the traced graph.
    """
    max_exact = num_buckets // 2
    distance = np.arange(max_distance + 1)
    scaled = (
        np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(num_buckets - max_exact)
    )
    large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
    return np.where(distance < max_exact, distance, large).astype(np.int32)


def relative_position_bucket(
    relative_position: Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
    """Maps ``key_position - query_position`` to a bucket id, exactly like HF/mesh-tf T5.

    Bidirectional (encoder) attention splits the buckets between the two directions;
    unidirectional (decoder) attention clamps future positions to distance 0.
    """
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(relative_position > 0, num_buckets, 0)
        distance = jnp.abs(relative_position)
    else:
        offset = 0
        distance = jnp.maximum(-relative_position, 0)
    table = jnp.asarray(_distance_buckets(num_buckets, max_distance))
    return offset + table[jnp.minimum(distance, max_distance)]


class RelativePositionBias(nn.Module):
    """Learned per-head scalar bias for each relative-position bucket."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions: Array, key_positions: Array) -> Array:
        """Positions [B|1, Q] and [B|1, K] -> float32 bias [B|1, heads, Q, K]."""
        cfg = self.config
        table = self.param(
            "rel_embedding",
            _normal(cfg.d_model**-0.5, ("relpos_buckets", "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads),
            jnp.dtype(cfg.param_dtype),
        )
        buckets = relative_position_bucket(
            key_positions[:, None, :] - query_positions[:, :, None],
            bidirectional=self.bidirectional,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
        )
        bias = jnp.take(table, buckets, axis=0).astype(jnp.float32)  # [B, Q, K, heads]
        return bias.transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------


def _mask_bias(mask: Array) -> Array:
    """Boolean mask [B|1, 1, Q|1, K] -> additive float32 attention bias of the same shape."""
    return jnp.where(mask, 0.0, _MASKED).astype(jnp.float32)


def _key_valid(tokens: Array, segment_ids: Array | None, pad_token_id: int) -> Array:
    return tokens != pad_token_id if segment_ids is None else segment_ids != 0


def _segment_mask(query_segments: Array, key_segments: Array) -> Array:
    """Same segment and not padding: [B, Q], [B, K] -> [B, 1, Q, K]."""
    same = query_segments[:, :, None] == key_segments[:, None, :]
    return (same & (key_segments[:, None, :] != 0))[:, None]


def _default_positions(length: int) -> Array:
    return jnp.arange(length, dtype=jnp.int32)[None]


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """T5LayerNorm: scale only, no mean subtraction or bias, variance in float32."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
            (x.shape[-1],),
            jnp.dtype(cfg.param_dtype),
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + cfg.layer_norm_epsilon)
        dtype = jnp.dtype(cfg.dtype)
        return y.astype(dtype) * scale.astype(dtype)


class HeadsProjection(nn.Module):
    """``[..., embed] -> [..., heads, kv]`` with a 3-D kernel named ("embed", "heads", "kv").

    Not ``nn.DenseGeneral``: that initialises a flat 2-D kernel and reshapes it, and under a mesh
    flax's param shape check then applies the 3-D logical constraint to the 2-D array and fails.
    """

    config: T5Config
    stddev: float
    lora_target: str  # "q", "k" or "v": the name LoRA targets use for this projection.

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        dtypes = _dtypes(cfg)
        kernel = self.param(
            "kernel",
            _normal(self.stddev, ("embed", "heads", "kv")),
            (cfg.d_model, cfg.num_heads, cfg.d_kv),
            dtypes["param_dtype"],
        )
        y = jnp.einsum("...d,dhk->...hk", x.astype(dtypes["dtype"]), kernel.astype(dtypes["dtype"]))
        if adapts(cfg, self.lora_target):
            shape = ((cfg.d_model,), ("embed",), (cfg.num_heads, cfg.d_kv), ("heads", "kv"))
            y = y + LoraAdapter(cfg, *shape, name=ADAPTER)(x, enable_dropout)
        return y


class HeadsOutput(nn.Module):
    """``[..., heads, kv] -> [..., embed]`` with a 3-D kernel named ("heads", "kv", "embed")."""

    config: T5Config
    stddev: float

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        dtypes = _dtypes(cfg)
        kernel = self.param(
            "kernel",
            _normal(self.stddev, ("heads", "kv", "embed")),
            (cfg.num_heads, cfg.d_kv, cfg.d_model),
            dtypes["param_dtype"],
        )
        y = jnp.einsum("...hk,hkd->...d", x.astype(dtypes["dtype"]), kernel.astype(dtypes["dtype"]))
        if adapts(cfg, "o"):
            shape = ((cfg.num_heads, cfg.d_kv), ("heads", "kv"), (cfg.d_model,), ("embed",))
            y = y + LoraAdapter(cfg, *shape, name=ADAPTER)(x, enable_dropout)
        return y


class Projection(nn.Module):
    """``[..., in] -> [..., out]`` with a kernel named (in_name, out_name), plus its LoRA adapter if targeted.

    Used instead of ``nn.Dense`` so an adapter can live inside the projection it adapts.
    """

    config: T5Config
    features: int
    stddev: float
    names: tuple[str, str]
    lora_target: str
    float32_output: bool = False  # The LM head accumulates and returns float32.

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        dtypes = _dtypes(cfg)
        kernel = self.param(
            "kernel", _normal(self.stddev, self.names), (x.shape[-1], self.features), dtypes["param_dtype"]
        )
        out_type = jnp.float32 if self.float32_output else None
        y = jnp.einsum(
            "...d,df->...f",
            x.astype(dtypes["dtype"]),
            kernel.astype(dtypes["dtype"]),
            preferred_element_type=out_type,
        )
        if adapts(cfg, self.lora_target):
            adapter = LoraAdapter(cfg, (x.shape[-1],), self.names[:1], (self.features,), self.names[1:], name=ADAPTER)
            y = y + adapter(x, enable_dropout).astype(y.dtype)
        return y


class MultiHeadAttention(nn.Module):
    """T5 attention (no score scaling) with an optional decode-time KV cache.

    ``attention_biases`` (relative position bias, mask bias) are added to the scores one by
    one rather than pre-summed, so no [B, heads, Q, K] bias is materialised per stack. With ``decode=True`` self-attention writes this step's key/value at ``cache_index`` of a
    cache preallocated to ``max_decode_length``; cross-attention (``cross_attention=True``)
    projects the encoder output once, on the first step, and reuses it afterwards.
    """

    config: T5Config
    cross_attention: bool = False

    def _projection(self, name: str, stddev: float) -> HeadsProjection:
        return HeadsProjection(self.config, stddev, lora_target=name[0], name=name)

    def _keys_values(self, inputs_kv: Array, enable_dropout: bool = False) -> tuple[Array, Array]:
        names = ("batch", "length", "heads", "kv")
        key = self._projection("key", self.config.d_model**-0.5)(inputs_kv, enable_dropout)
        value = self._projection("value", self.config.d_model**-0.5)(inputs_kv, enable_dropout)
        return _constrain(key, names), _constrain(value, names)

    def _cached_cross_keys_values(self, inputs_kv: Array) -> tuple[Array, Array]:
        if self.has_variable("cache", "cached_key"):
            return self.get_variable("cache", "cached_key"), self.get_variable("cache", "cached_value")
        key, value = self._keys_values(inputs_kv)
        self.put_variable("cache", "cached_key", key)
        self.put_variable("cache", "cached_value", value)
        return key, value

    def _cached_self_keys_values(
        self, key: Array, value: Array, cache_index: Array, max_decode_length: int
    ) -> tuple[Array, Array]:
        shape = (key.shape[0], max_decode_length, *key.shape[2:])
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
        start = (0, cache_index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        return cached_key.value, cached_value.value

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        attention_biases: Sequence[Array],
        enable_dropout: bool = False,
        decode: bool = False,
        cache_index: Array | None = None,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        names = ("batch", "length", "heads", "kv")
        query = self._projection("query", (cfg.d_model * cfg.d_kv) ** -0.5)(inputs_q, enable_dropout)
        query = _constrain(query, names)
        if decode and self.cross_attention:
            key, value = self._cached_cross_keys_values(inputs_kv)
        else:
            key, value = self._keys_values(inputs_kv, enable_dropout)
            if decode:
                key, value = self._cached_self_keys_values(key, value, cache_index, max_decode_length)

        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        for bias in attention_biases:
            scores = scores + bias
        weights = jax.nn.softmax(scores, axis=-1)
        weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=not enable_dropout)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
        out = _constrain(out, names)
        return HeadsOutput(cfg, (cfg.num_heads * cfg.d_kv) ** -0.5, name="out")(out, enable_dropout)


class MlpBlock(nn.Module):
    """T5 feed-forward: ``wo(act(wi x))`` or gated ``wo(act(wi_0 x) * wi_1 x)``."""

    config: T5Config

    def _dense(self, name: str, features: int, stddev: float, names: tuple[str, str]) -> Projection:
        return Projection(self.config, features, stddev, names, lora_target=name[:2], name=name)

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        act = _ACTIVATIONS[cfg.dense_act_fn]
        up = functools.partial(self._dense, features=cfg.d_ff, stddev=cfg.d_model**-0.5, names=("embed", "mlp"))
        if cfg.is_gated_act:
            h = act(up("wi_0")(x, enable_dropout)) * up("wi_1")(x, enable_dropout)
        else:
            h = act(up("wi")(x, enable_dropout))
        h = _constrain(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=not enable_dropout)
        return self._dense("wo", cfg.d_model, cfg.d_ff**-0.5, ("mlp", "embed"))(h, enable_dropout)


class _Residual(nn.Module):
    """Dropout on a sublayer output before adding it back, as in every HF T5 sublayer."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, y: Array, enable_dropout: bool) -> Array:
        y = nn.Dropout(self.config.dropout_rate)(y, deterministic=not enable_dropout)
        return _constrain(x + y, ("batch", "length", "embed"))


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


def _maybe_remat(layer_cls: type[nn.Module], cfg: T5Config, enable_dropout_argnum: int) -> type[nn.Module]:
    """Wraps a layer in ``nn.remat`` per ``cfg.remat``; ``enable_dropout`` must stay static."""
    if cfg.remat == "none":
        return layer_cls
    policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if cfg.remat == "dots_saveable" else None
    # static_argnums counts ``self`` as argument 0.
    return nn.remat(layer_cls, policy=policy, static_argnums=(enable_dropout_argnum,))


# ----------------------------------------------------------------------------------------------
# Stacks
# ----------------------------------------------------------------------------------------------


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
        if segment_ids is None:
            mask = _key_valid(tokens, None, cfg.pad_token_id)[:, None, None, :]
        else:
            mask = _segment_mask(segment_ids, segment_ids)
        if positions is None:
            positions = _default_positions(tokens.shape[1])
        relpos = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(positions, positions)
        attention_biases = (relpos, _mask_bias(mask))

        x = self.shared_embedding(tokens.astype(jnp.int32))
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        x = _constrain(x, ("batch", "length", "embed"))
        layer_cls = _maybe_remat(EncoderLayer, cfg, enable_dropout_argnum=3)
        for i in range(cfg.num_encoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, attention_biases, enable_dropout)
        x = RMSNorm(cfg, name="encoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        return _constrain(x, ("batch", "length", "embed"))


class Decoder(nn.Module):
    """Decoder stack plus LM head.

    ``decode=True`` processes a single step ([B, 1] tokens): the step number lives in the
    ``cache/decoder/cache_index`` variable, which sets both the relative position of the query
    and where each layer writes its keys/values. All cache variables are created, zeroed (the
    cross-attention ones filled from ``encoded``), on the first such call.
    """

    config: T5Config
    shared_embedding: nn.Module

    def _step_biases(self, max_decode_length: int) -> tuple[tuple[Array, Array], Array]:
        """Self-attention biases of the current step against the whole cache, and its index."""
        index_var = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        index = index_var.value
        index_var.value = index + 1
        key_positions = _default_positions(max_decode_length)
        relpos = RelativePositionBias(self.config, bidirectional=False, name="relpos_bias")(
            index[None, None], key_positions
        )
        return (relpos, _mask_bias((key_positions <= index)[:, None, None, :])), index

    def _full_biases(self, length: int, segment_ids: Array | None, positions: Array | None) -> tuple[Array, Array]:
        causal = jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]
        mask = causal if segment_ids is None else causal & _segment_mask(segment_ids, segment_ids)
        if positions is None:
            positions = _default_positions(length)
        relpos = RelativePositionBias(self.config, bidirectional=False, name="relpos_bias")(positions, positions)
        return relpos, _mask_bias(mask)

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
            if decoder_tokens.shape[1] != 1 or max_decode_length is None:
                raise ValueError("decode=True takes one [B, 1] step of tokens and needs max_decode_length")
            if decoder_segment_ids is not None or decoder_positions is not None:
                raise ValueError("decode=True decodes unpacked rows: drop decoder segment ids and positions")
            self_biases, cache_index = self._step_biases(max_decode_length)
        else:
            self_biases = self._full_biases(decoder_tokens.shape[1], decoder_segment_ids, decoder_positions)

        if encoder_segment_ids is None or decoder_segment_ids is None or decode:
            cross_mask = _key_valid(encoder_tokens, encoder_segment_ids, cfg.pad_token_id)[:, None, None, :]
        else:
            cross_mask = _segment_mask(decoder_segment_ids, encoder_segment_ids)
        cross_biases = (_mask_bias(cross_mask),)

        x = self.shared_embedding(decoder_tokens.astype(jnp.int32))
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        x = _constrain(x, ("batch", "length", "embed"))
        # Rematerialisation only pays off when a backward pass follows, never in cached decoding.
        layer_cls = DecoderLayer if decode else _maybe_remat(DecoderLayer, cfg, enable_dropout_argnum=5)
        for i in range(cfg.num_decoder_layers):
            layer = layer_cls(cfg, name=f"layers_{i}")
            if decode:
                x = layer(x, encoded, self_biases, cross_biases, enable_dropout, True, cache_index, max_decode_length)
            else:
                x = layer(x, encoded, self_biases, cross_biases, enable_dropout)
        x = RMSNorm(cfg, name="decoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        return self._logits(x, enable_dropout)

    def _logits(self, x: Array, enable_dropout: bool) -> Array:
        """LM head in the compute dtype with float32 accumulation and output."""
        cfg = self.config
        if cfg.tie_word_embeddings:
            x = x * (cfg.d_model**-0.5)
            embedding = self.shared_embedding.embedding.astype(x.dtype)
            logits = jnp.einsum("btd,vd->btv", x, embedding, preferred_element_type=jnp.float32)
        else:
            logits = Projection(
                cfg,
                cfg.vocab_size,
                cfg.d_model**-0.5,
                ("embed", "vocab"),
                lora_target="lm_head",
                float32_output=True,
                name="logits_dense",
            )(x, enable_dropout)
        return _constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class T5Transformer(nn.Module):
    """T5 encoder-decoder returning float32 logits.

    Without segment ids, encoder padding is ``tokens == pad_token_id`` and the decoder uses a
    plain causal mask (its first input is the start token, which is the pad id in T5; padded
    target positions only ever see earlier positions). With segment ids (0 = padding) attention
    is restricted to the same segment, which makes packed rows equivalent to separate rows.
    """

    config: T5Config

    def setup(self) -> None:
        cfg = self.config
        self.token_embedder = nn.Embed(
            num_embeddings=cfg.vocab_size,
            features=cfg.d_model,
            embedding_init=_normal(1.0, ("vocab", "embed")),
            **_dtypes(cfg),
        )
        self.encoder = Encoder(cfg, shared_embedding=self.token_embedder)
        self.decoder = Decoder(cfg, shared_embedding=self.token_embedder)

    def encode(
        self,
        encoder_input_tokens: Array,
        *,
        encoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        """Encoder output [B, S, d_model] in the compute dtype."""
        return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions, enable_dropout)

    def decode(
        self,
        encoded: Array,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        *,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        """Decoder logits [B, T, vocab] float32; ``decode=True`` runs one cached step (T = 1)."""
        return self.decoder(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            decoder_positions,
            enable_dropout,
            decode,
            max_decode_length,
        )

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        *,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        """Teacher-forced logits [B, T, vocab] float32."""
        encoded = self.encode(
            encoder_input_tokens,
            encoder_segment_ids=encoder_segment_ids,
            encoder_positions=encoder_positions,
            enable_dropout=enable_dropout,
        )
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            enable_dropout=enable_dropout,
        )


def shift_right(targets: Array, decoder_start_token_id: int = 0, segment_ids: Array | None = None) -> Array:
    """Teacher-forcing decoder inputs: targets shifted right by one with the start token first.

    With ``segment_ids`` (packed rows) every segment starts with the start token instead of
    the previous segment's last token.
    """
    start = jnp.full_like(targets[:, :1], decoder_start_token_id)
    shifted = jnp.concatenate([start, targets[:, :-1]], axis=1)
    if segment_ids is None:
        return shifted
    segment_start = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], jnp.bool_), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    return jnp.where(segment_start, decoder_start_token_id, shifted).astype(targets.dtype)


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
