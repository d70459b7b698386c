"""The building blocks of the T5 student: relative position bias, masks, RMSNorm, projections, attention, MLP.

Each block matches its transformers T5 counterpart numerically; every parameter carries logical
axis names and the projections host their LoRA adapters (see ``lora.py``). ``t5.py`` assembles
them into the encoder-decoder.
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

from distill_jax.models.bart_config import BartConfig
from distill_jax.models.lora import ADAPTER, LoraAdapter, adapts
from distill_jax.models.t5_config import T5Config

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
}
# Added to masked attention scores; the most negative float32, as HF uses.
MASKED = float(np.finfo(np.float32).min)


def normal_init(stddev: float, names: tuple[str, ...]) -> Callable[..., Any]:
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def constrain(x: Array, names: tuple[str, ...]) -> Array:
    return nn.with_logical_constraint(x, names)


def compute_dtypes(cfg: T5Config | BartConfig) -> dict[str, Any]:
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
            normal_init(cfg.d_model**-0.5, ("relpos_buckets", "heads")),
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


def mask_bias(mask: Array) -> Array:
    """Boolean mask [B|1, 1, Q|1, K] -> additive float32 attention bias of the same shape."""
    return jnp.where(mask, 0.0, MASKED).astype(jnp.float32)


def key_valid(tokens: Array, segment_ids: Array | None, pad_token_id: int) -> Array:
    return tokens != pad_token_id if segment_ids is None else segment_ids != 0


def segment_mask(query_segments: Array, key_segments: Array) -> Array:
    """Same segment and not padding: [B, Q], [B, K] -> [B, 1, Q, K]."""
    same = query_segments[:, :, None] == key_segments[:, None, :]
    return (same & (key_segments[:, None, :] != 0))[:, None]


def default_positions(length: int) -> Array:
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
        dtypes = compute_dtypes(cfg)
        kernel = self.param(
            "kernel",
            normal_init(self.stddev, ("embed", "heads", "kv")),
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
        dtypes = compute_dtypes(cfg)
        kernel = self.param(
            "kernel",
            normal_init(self.stddev, ("heads", "kv", "embed")),
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
        dtypes = compute_dtypes(cfg)
        kernel = self.param(
            "kernel", normal_init(self.stddev, self.names), (x.shape[-1], self.features), dtypes["param_dtype"]
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


def attend(
    query: Array,
    key: Array,
    value: Array,
    biases: Sequence[Array],
    *,
    scale: float,
    impl: str,
    dropout: Callable[[Array], Array] | None = None,
) -> Array:
    """Softmax attention of [B, Q, heads, d] queries over [B, K, heads, d] keys/values -> [B, Q, heads, d].

    ``impl`` is one of t5_config.ATTENTION_IMPLS. jax.nn.dot_product_attention has no attention-weight
    dropout, so an active ``dropout`` takes the einsum path whatever ``impl`` says.

    ``biases`` ([B|1, heads|1, Q|1, K] each) are added to the float32 scores; ``dropout`` (applied to the
    weights) is given only when it is active.
    """
    if impl == "jax" and dropout is None:
        bias = functools.reduce(jnp.add, biases)
        return jax.nn.dot_product_attention(query, key, value, bias=bias.astype(query.dtype), scale=scale)
    # Heads-major operands make both products plain batched matmuls: contracting the
    # [b, l, h, d] layout directly ran ~5x slower on XLA CPU (64 x 100 tokens, 4 heads).
    query, key, value = (jnp.swapaxes(x, 1, 2) for x in (query, key, value))
    scores = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    if scale != 1.0:
        scores = scores * scale
    for bias in biases:  # added one by one: no [B, heads, Q, K] sum is materialised per stack
        scores = scores + bias
    weights = jax.nn.softmax(scores, axis=-1)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights.astype(value.dtype), value), 1, 2)


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
        return constrain(key, names), constrain(value, names)

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
        query = constrain(query, names)
        if decode and self.cross_attention:
            key, value = self._cached_cross_keys_values(inputs_kv)
        else:
            key, value = self._keys_values(inputs_kv, enable_dropout)
            if decode:
                key, value = self._cached_self_keys_values(key, value, cache_index, max_decode_length)

        dropout = nn.Dropout(cfg.dropout_rate, deterministic=False) if enable_dropout and cfg.dropout_rate else None
        out = attend(query, key, value, attention_biases, scale=1.0, impl=cfg.attention_impl, dropout=dropout)
        out = constrain(out, names)
        return HeadsOutput(cfg, (cfg.num_heads * cfg.d_kv) ** -0.5, name="out")(out, enable_dropout)


class MlpBlock(nn.Module):
    """T5 feed-forward: ``wo(act(wi x))`` or gated ``wo(act(wi_0 x) * wi_1 x)``."""

    config: T5Config

    def _dense(self, name: str, features: int, stddev: float, names: tuple[str, str]) -> Projection:
        return Projection(self.config, features, stddev, names, lora_target=name[:2], name=name)

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        act = ACTIVATIONS[cfg.dense_act_fn]
        up = functools.partial(self._dense, features=cfg.d_ff, stddev=cfg.d_model**-0.5, names=("embed", "mlp"))
        if cfg.is_gated_act:
            h = act(up("wi_0")(x, enable_dropout)) * up("wi_1")(x, enable_dropout)
        else:
            h = act(up("wi")(x, enable_dropout))
        h = constrain(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=not enable_dropout)
        return self._dense("wo", cfg.d_model, cfg.d_ff**-0.5, ("mlp", "embed"))(h, enable_dropout)
