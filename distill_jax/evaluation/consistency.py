"""Does cached greedy decoding compute what teacher-forced scoring (the loss) computes?

For every decoded row and step t up to and including the row's EOS:
- the greedy token equals the argmax of the teacher-forced logits given the decoded prefix
  (ties within ``tie_margin`` excepted: argmax may break them differently across float paths);
- the cached decoder's log-probability of that token equals the teacher-forced log-probability of
  the same sequence within ``atol``.

A model whose loss is low while its decoded text is garbage fails this check when the cause is a
decode/training mismatch (positions, cache, start token, masks), and passes it when the cause is
the model itself (exposure bias, an overfit prior): the check separates the two.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.models.decoding import greedy_decode_scored
from distill_jax.models.family import Model
from distill_jax.models.seq2seq import Seq2SeqModel


@dataclasses.dataclass(frozen=True)
class ConsistencyReport:
    """What the check found over a batch of decoded rows."""

    rows: int
    steps: int  # Decoded steps compared (up to and including each row's EOS).
    token_mismatches: int  # Steps whose greedy token is not the teacher-forced argmax (beyond a tie).
    max_logprob_diff: float  # Largest |cached - teacher-forced| log-prob of the decoded token.
    first_mismatch: tuple[int, int] | None  # (row, step) of the first token mismatch, if any.

    def ok(self, atol: float) -> bool:
        return self.token_mismatches == 0 and self.max_logprob_diff <= atol

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _compare(model: Model, max_decode_length: int, params: Any, encoder_tokens: jax.Array) -> dict[str, jax.Array]:
    cfg = model.config
    tokens, decoded_logp = greedy_decode_scored(model, params, encoder_tokens, max_decode_length=max_decode_length)
    logits = (
        Seq2SeqModel(model)
        .logits(params, {"encoder_input_tokens": encoder_tokens, "decoder_target_tokens": tokens})
        .astype(jnp.float32)
    )
    logp = jax.nn.log_softmax(logits, axis=-1)
    forced_logp = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    top2 = jax.lax.top_k(logits, 2)[0]
    is_eos = (tokens == cfg.eos_token_id).astype(jnp.int32)
    valid = (jnp.cumsum(is_eos, axis=-1) - is_eos) == 0  # Up to and including the first EOS.
    return dict(
        valid=valid,
        argmax=jnp.argmax(logits, axis=-1).astype(jnp.int32),
        tokens=tokens,
        margin=top2[..., 0] - top2[..., 1],
        diff=jnp.abs(decoded_logp - forced_logp),
    )


@functools.lru_cache(maxsize=8)
def _compiled(model: Model, max_decode_length: int):
    return jax.jit(functools.partial(_compare, model, max_decode_length))


def check_decode_consistency(
    model: Model,
    params: Any,
    encoder_tokens: jax.Array | np.ndarray,
    *,
    max_decode_length: int,
    tie_margin: float = 1e-4,
) -> ConsistencyReport:
    """Decodes ``encoder_tokens`` greedily and compares every step with a teacher-forced pass."""
    out = jax.device_get(_compiled(model, max_decode_length)(params, jnp.asarray(encoder_tokens)))
    valid = out["valid"]
    mismatch = valid & (out["tokens"] != out["argmax"]) & (out["margin"] > tie_margin)
    where = np.argwhere(mismatch)
    return ConsistencyReport(
        rows=int(valid.shape[0]),
        steps=int(valid.sum()),
        token_mismatches=int(mismatch.sum()),
        max_logprob_diff=float(np.max(np.where(valid, out["diff"], 0.0))) if valid.size else 0.0,
        first_mismatch=(int(where[0][0]), int(where[0][1])) if len(where) else None,
    )
