"""Greedy decoding for ``T5Transformer`` with a KV cache.

``greedy_decode`` is a pure function of arrays once ``model`` and ``max_decode_length`` are
fixed, so jit it as::

    decode_fn = jax.jit(functools.partial(greedy_decode, model, max_decode_length=64))
    tokens = decode_fn(params, encoder_input_tokens)

(``encoder_segment_ids`` may be passed as a keyword argument to the jitted function).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from distill_jax.models.t5 import T5Transformer


def greedy_decode(
    model: T5Transformer,
    params: Any,
    encoder_input_tokens: jax.Array,
    *,
    max_decode_length: int,
    encoder_segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Argmax decoding: returns [B, max_decode_length] int32 tokens, start token excluded.

    The encoder runs once. The first decoder step (from ``decoder_start_token_id``) creates the
    cache, including the cross-attention keys/values; the remaining steps run in a
    ``lax.while_loop`` that exits as soon as every row has produced EOS. A row's tokens after
    its EOS are ``pad_token_id``, as in HF ``generate``.
    """
    cfg = model.config
    batch = encoder_input_tokens.shape[0]
    variables = {"params": params}
    encoded = model.apply(
        variables, encoder_input_tokens, encoder_segment_ids=encoder_segment_ids, method=T5Transformer.encode
    )

    def step(cache: Any | None, tokens: jax.Array) -> tuple[jax.Array, Any]:
        logits, mutated = model.apply(
            variables if cache is None else {**variables, "cache": cache},
            encoded,
            encoder_input_tokens,
            tokens[:, None],
            encoder_segment_ids=encoder_segment_ids,
            decode=True,
            max_decode_length=max_decode_length,
            mutable=["cache"],
            method=T5Transformer.decode,
        )
        return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), mutated["cache"]

    first, cache = step(None, jnp.full((batch,), cfg.decoder_start_token_id, jnp.int32))
    output = jnp.full((batch, max_decode_length), cfg.pad_token_id, jnp.int32).at[:, 0].set(first)
    finished = first == cfg.eos_token_id

    def cond(state: tuple) -> jax.Array:
        index, _, _, _, finished = state
        return (index < max_decode_length) & ~jnp.all(finished)

    def body(state: tuple) -> tuple:
        index, previous, cache, output, finished = state
        token, cache = step(cache, previous)
        token = jnp.where(finished, cfg.pad_token_id, token)
        output = jax.lax.dynamic_update_slice(output, token[:, None], (0, index))
        return index + 1, token, cache, output, finished | (token == cfg.eos_token_id)

    state = (jnp.array(1, jnp.int32), first, cache, output, finished)
    return jax.lax.while_loop(cond, body, state)[3]
