"""The building blocks of the T5 student: relative position bias, RMSNorm, projections, attention, MLP.

Each block matches its transformers T5 counterpart numerically; every parameter carries logical
axis names and the projections host their LoRA adapters (see ``lora.py``). ``t5.py`` assembles
them into the encoder-decoder.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.models.attention import HEAD_AXES, CachedAttention, float32_product
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


class Dense(nn.Module):
    """``[..., *in_shape] -> [..., *out_shape]`` with named kernel axes, an optional bias and its LoRA adapter.

    Every projection of both families: attention's q/k/v/o with 3-D kernels (embed x heads x kv), the
    MLP, an untied LM head. Not ``nn.DenseGeneral``: that initialises a flat 2-D kernel and reshapes it,
    and under a mesh flax's param shape check then applies the 3-D logical constraint to the 2-D array
    and fails. The adapter lives inside the projection it adapts (``lora.py``).
    """

    config: T5Config | BartConfig
    in_shape: tuple[int, ...]
    in_names: tuple[str, ...]
    out_shape: tuple[int, ...]
    out_names: tuple[str, ...]
    stddev: float
    lora_target: str  # the name LoRA targets use for this projection (q, k, v, o, wi, wo, lm_head, ...)
    use_bias: bool = False
    float32_output: bool = False  # The LM head accumulates and returns float32.

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        dtypes = compute_dtypes(cfg)
        kernel = self.param(
            "kernel",
            normal_init(self.stddev, self.in_names + self.out_names),
            self.in_shape + self.out_shape,
            dtypes["param_dtype"],
        )
        product = functools.partial(jnp.tensordot, axes=len(self.in_shape))
        operands = (x.astype(dtypes["dtype"]), kernel.astype(dtypes["dtype"]))
        y = float32_product(product, *operands) if self.float32_output else product(*operands)
        if self.use_bias:
            bias_init = nn.with_logical_partitioning(nn.initializers.zeros, self.out_names)
            y = y + self.param("bias", bias_init, self.out_shape, dtypes["param_dtype"]).astype(y.dtype)
        if adapts(cfg, self.lora_target):
            adapter = LoraAdapter(cfg, self.in_shape, self.in_names, self.out_shape, self.out_names, name=ADAPTER)
            y = y + adapter(x, enable_dropout).astype(y.dtype)
        return y


_TIED_LOGITS = functools.partial(jnp.einsum, "btd,vd->btv")


def lm_logits(
    cfg: T5Config | BartConfig, shared_embedding: nn.Module, x: Array, stddev: float, enable_dropout: bool
) -> Array:
    """The LM head's float32 logits [B, T, vocab], computed in the compute dtype with float32 accumulation:
    against the shared embedding when tied, else a ``logits_dense`` projection (LoRA target ``lm_head``)."""
    if cfg.tie_word_embeddings:
        embedding = shared_embedding.embedding.astype(x.dtype)
        return float32_product(_TIED_LOGITS, x, embedding)
    vocab = ((cfg.vocab_size,), ("vocab",))
    head = Dense(cfg, (cfg.d_model,), ("embed",), *vocab, stddev, "lm_head", float32_output=True, name="logits_dense")
    return head(x, enable_dropout)


class MultiHeadAttention(CachedAttention):
    """T5 attention (no score scaling) with an optional decode-time KV cache.

    ``biases`` (relative position bias, mask bias) are added to the scores one by one rather than
    pre-summed, so no [B, heads, Q, K] bias is materialised per stack. The flow and the decode cache
    are ``CachedAttention``'s.
    """

    config: T5Config
    cross_attention: bool = False

    def _projection(self, name: str, stddev: float) -> Dense:
        cfg = self.config
        heads = ((cfg.num_heads, cfg.d_kv), ("heads", "kv"))
        return Dense(cfg, (cfg.d_model,), ("embed",), *heads, stddev, lora_target=name[0], name=name)

    def _query(self, inputs_q: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        query = self._projection("query", (cfg.d_model * cfg.d_kv) ** -0.5)(inputs_q, enable_dropout)
        return constrain(query, HEAD_AXES)

    def _keys_values(self, inputs_kv: Array, enable_dropout: bool = False) -> tuple[Array, Array]:
        key = self._projection("key", self.config.d_model**-0.5)(inputs_kv, enable_dropout)
        value = self._projection("value", self.config.d_model**-0.5)(inputs_kv, enable_dropout)
        return constrain(key, HEAD_AXES), constrain(value, HEAD_AXES)

    def _output(self, out: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        heads = ((cfg.num_heads, cfg.d_kv), ("heads", "kv"))
        output = Dense(cfg, *heads, (cfg.d_model,), ("embed",), (cfg.num_heads * cfg.d_kv) ** -0.5, "o", name="out")
        return output(out, enable_dropout)

    def _scale(self) -> float:
        return 1.0  # folded into the query's init, as in mesh-tf

    def _dropout_rate(self) -> float:
        return self.config.dropout_rate


class MlpBlock(nn.Module):
    """T5 feed-forward: ``wo(act(wi x))`` or gated ``wo(act(wi_0 x) * wi_1 x)``."""

    config: T5Config

    def _dense(self, name: str, shape: tuple[int, int], stddev: float, names: tuple[str, str]) -> Dense:
        return Dense(self.config, shape[:1], names[:1], shape[1:], names[1:], stddev, name[:2], name=name)

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        act = ACTIVATIONS[cfg.dense_act_fn]
        up = functools.partial(
            self._dense, shape=(cfg.d_model, cfg.d_ff), stddev=cfg.d_model**-0.5, names=("embed", "mlp")
        )
        if cfg.is_gated_act:
            h = act(up("wi_0")(x, enable_dropout)) * up("wi_1")(x, enable_dropout)
        else:
            h = act(up("wi")(x, enable_dropout))
        h = constrain(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=not enable_dropout)
        return self._dense("wo", (cfg.d_ff, cfg.d_model), cfg.d_ff**-0.5, ("mlp", "embed"))(h, enable_dropout)
