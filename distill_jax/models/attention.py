"""What both families' attention shares: masks as additive biases, ``attend`` (einsum or
jax.nn.dot_product_attention), the decode-time KV cache and the attention module's flow.

T5's ``layers.MultiHeadAttention`` and BART's ``bart.Attention`` differ in their projections, scaling
and dropout rate only; masks, the softmax, the cache layout (which ``decoding.py`` reorders for beams)
and ``CachedAttention.__call__`` are these.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_SCORES = functools.partial(jnp.einsum, "bhqd,bhkd->bhqk")
# Added to masked attention scores; the most negative float32, as HF uses.
MASKED = float(np.finfo(np.float32).min)
# The logical axes of per-head queries, keys, values and attention outputs.
HEAD_AXES = ("batch", "length", "heads", "kv")


class DecodeStep(NamedTuple):
    """One cached decode step, as the decoder hands it to its layers and their attention (None: no cache).

    ``index`` is the step's position and where self-attention writes its keys/values; ``length`` is
    the cache's (``max_decode_length``), static.
    """

    index: Array
    length: int


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


def padding_mask(tokens: Array, segment_ids: Array | None, pad_token_id: int) -> Array:
    """Encoder self-attention [B, 1, 1|Q, K]: keys that are not padding, of the query's segment when packed."""
    if segment_ids is None:
        return key_valid(tokens, None, pad_token_id)[:, None, None, :]
    return segment_mask(segment_ids, segment_ids)


def causal_mask(length: int, segment_ids: Array | None) -> Array:
    """Decoder self-attention over a whole sequence [1|B, 1, Q, K]: earlier keys, of the same segment when packed."""
    causal = jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]
    return causal if segment_ids is None else causal & segment_mask(segment_ids, segment_ids)


def step_mask(cache_index: Array, max_decode_length: int) -> Array:
    """One cached decode step's self-attention [1, 1, 1, max_decode_length]: the cache filled so far."""
    return (default_positions(max_decode_length) <= cache_index)[:, None, None, :]


def cross_mask(
    encoder_tokens: Array,
    encoder_segment_ids: Array | None,
    decoder_segment_ids: Array | None,
    pad_token_id: int,
    decode: bool,
) -> Array:
    """Decoder-to-encoder attention: the encoder's real tokens; packed rows only their own segment's."""
    if encoder_segment_ids is None or decoder_segment_ids is None or decode:
        return key_valid(encoder_tokens, encoder_segment_ids, pad_token_id)[:, None, None, :]
    return segment_mask(decoder_segment_ids, encoder_segment_ids)


# ----------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def float32_product(product: Callable[..., Array], a: Array, b: Array) -> Array:
    """``product(a, b)`` accumulated and returned in float32, its gradients computed in ``a``'s and ``b``'s dtype.

    For the products whose output feeds float32 statistics (attention scores, the LM head's logits).
    JAX's own gradient would multiply the float32 cotangent with the bf16 operand, a mixed product
    that runs in float32 (off a GPU's bf16 tensor cores) in the LM head's two backward matmuls, among
    the step's largest; here the cotangent is cast to the compute dtype first, as bf16 training does.
    """
    return product(a, b, preferred_element_type=jnp.float32)


def _float32_product_fwd(product: Callable[..., Array], a: Array, b: Array) -> tuple[Array, tuple[Array, Array]]:
    return float32_product(product, a, b), (a, b)


def _float32_product_bwd(product: Callable[..., Array], operands: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    a, b = operands
    _, pullback = jax.vjp(product, a, b)
    return pullback(g.astype(jnp.result_type(a, b)))


float32_product.defvjp(_float32_product_fwd, _float32_product_bwd)


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
    scores = float32_product(_SCORES, query, key)
    if scale != 1.0:
        scores = scores * scale
    for bias in biases:  # added one by one: no [B, heads, Q, K] sum is materialised per stack
        scores = scores + bias
    weights = jax.nn.softmax(scores, axis=-1)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights.astype(value.dtype), value), 1, 2)


class CachedAttention(nn.Module):
    """Both families' attention module: query, keys/values (through the decode cache), ``attend``, output.

    Self-attention with a ``DecodeStep`` writes this step's key/value at ``step.index`` of a cache
    preallocated to ``step.length``; cross-attention (``cross_attention``) projects the encoder output
    once, on the first step, and reuses it afterwards. One cache layout, so ``decoding.py`` reorders
    beams alike. A subclass has ``config`` and ``cross_attention`` fields and defines its projections
    (``_query``, ``_keys_values``, ``_output``, each creating its named ``Dense``), the score
    ``_scale`` and the attention weights' ``_dropout_rate``.
    """

    def _query(self, inputs_q: Array, enable_dropout: bool) -> Array:
        raise NotImplementedError

    def _keys_values(self, inputs_kv: Array, enable_dropout: bool = False) -> tuple[Array, Array]:
        raise NotImplementedError

    def _output(self, out: Array, enable_dropout: bool) -> Array:
        raise NotImplementedError

    def _scale(self) -> float:
        raise NotImplementedError

    def _dropout_rate(self) -> float:
        raise NotImplementedError

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        biases: Sequence[Array],
        enable_dropout: bool = False,
        step: DecodeStep | None = None,
    ) -> Array:
        """[B, Q, d_model] queries over [B, K, d_model] keys/values -> [B, Q, d_model]; ``biases`` as ``attend``'s."""
        query = self._query(inputs_q, enable_dropout)
        key, value = self._cached_keys_values(inputs_kv, enable_dropout, step)
        rate = self._dropout_rate()
        dropout = nn.Dropout(rate, deterministic=False) if enable_dropout and rate else None
        out = attend(query, key, value, biases, scale=self._scale(), impl=self.config.attention_impl, dropout=dropout)
        return self._output(nn.with_logical_constraint(out, HEAD_AXES), enable_dropout)

    def _cached_keys_values(
        self, inputs_kv: Array, enable_dropout: bool, step: DecodeStep | None
    ) -> tuple[Array, Array]:
        """This call's keys and values: projected, or (decoding) through the cache."""
        if step is not None and self.cross_attention:
            if self.has_variable("cache", "cached_key"):
                return self.get_variable("cache", "cached_key"), self.get_variable("cache", "cached_value")
            key, value = self._keys_values(inputs_kv)
            self.put_variable("cache", "cached_key", key)
            self.put_variable("cache", "cached_value", value)
            return key, value
        key, value = self._keys_values(inputs_kv, enable_dropout)
        if step is None:
            return key, value
        shape = (key.shape[0], step.length, *key.shape[2:])
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
        start = (0, step.index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        return cached_key.value, cached_value.value
