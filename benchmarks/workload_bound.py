"""The physical bound of a workload: its own matrix products, each timed alone on this device.

A 2048² probe says what the densest op can do; a d_model=128 model never multiplies matrices that
big, and a batch-64 decode step multiplies [64, d] by [d, n], which is limited by reading the
weights, not by the vector units. So the bound a workload is held to is built from its own shapes:
every matmul of one train step (forward, and both backward products of each) or of one whole
decode call (encoder once, then every step's products at the cache length that step attends to),
grouped by shape, each distinct shape timed alone (best of ``repeats`` jitted calls with the real
contraction, so a weight gradient's token-dimension contraction is timed as it runs), and summed:

    bound_s = sum over shapes of count x best_seconds(shape)

A step that took exactly ``bound_s`` would have spent all of its time in matmuls running as fast as
this device runs them alone, with norms, softmax, the optimizer and every copy free. ``fraction of
bound = bound_s / measured_s``. Only matmul shapes are timed: elementwise work, the loss and the
optimizer count as overhead, which is what the fraction is meant to expose.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterable

import harness
import jax
import jax.numpy as jnp

from distill_jax.models.t5_config import T5Config


@dataclasses.dataclass(frozen=True)
class Matmul:
    """One contraction: ``jnp.einsum(equation, zeros(lhs), zeros(rhs))``, with its FLOPs."""

    equation: str
    lhs: tuple[int, ...]
    rhs: tuple[int, ...]

    @property
    def flops(self) -> float:
        ins, out = self.equation.split("->")
        a, b = ins.split(",")
        size = dict(zip(a, self.lhs)) | dict(zip(b, self.rhs))
        total = 2.0
        for letter in set(a + b):
            total *= size[letter]
        return total


def dense(m: int, k: int, n: int, backward: bool) -> list[Matmul]:
    """x[m, k] @ w[k, n], and with ``backward`` dx = dy @ w^T and dw = x^T @ dy (contracting m)."""
    out = [Matmul("mk,kn->mn", (m, k), (k, n))]
    if backward:
        out += [Matmul("mn,kn->mk", (m, n), (k, n)), Matmul("mk,mn->kn", (m, k), (m, n))]
    return out


def attention(rows: int, q_len: int, kv_len: int, d_kv: int, backward: bool) -> list[Matmul]:
    """Scores q[r, q, d] · k[r, kv, d] and context p[r, q, kv] · v[r, kv, d], r = batch x heads."""
    out = [
        Matmul("bqd,bkd->bqk", (rows, q_len, d_kv), (rows, kv_len, d_kv)),
        Matmul("bqk,bkd->bqd", (rows, q_len, kv_len), (rows, kv_len, d_kv)),
    ]
    if backward:
        out += [
            Matmul("bqk,bkd->bqd", (rows, q_len, kv_len), (rows, kv_len, d_kv)),  # d scores -> dq
            Matmul("bqk,bqd->bkd", (rows, q_len, kv_len), (rows, q_len, d_kv)),  # d scores -> dk, p -> dv
            Matmul("bqk,bqd->bkd", (rows, q_len, kv_len), (rows, q_len, d_kv)),
            Matmul("bqd,bkd->bqk", (rows, q_len, d_kv), (rows, kv_len, d_kv)),  # d context -> dp
        ]
    return out


def _mlp(cfg: T5Config, tokens: int, backward: bool) -> list[Matmul]:
    ins = 2 if cfg.is_gated_act else 1
    return ins * dense(tokens, cfg.d_model, cfg.d_ff, backward) + dense(tokens, cfg.d_ff, cfg.d_model, backward)


def train_step_matmuls(cfg: T5Config, batch: int, input_len: int, target_len: int) -> list[Matmul]:
    """Every matmul of one forward + backward pass of ``batch`` rows of ``input_len``/``target_len``."""
    a, h = cfg.num_heads * cfg.d_kv, cfg.num_heads
    enc_tokens, dec_tokens = batch * input_len, batch * target_len
    out: list[Matmul] = []
    for _ in range(cfg.num_encoder_layers):
        out += 3 * dense(enc_tokens, cfg.d_model, a, True) + dense(enc_tokens, a, cfg.d_model, True)
        out += attention(batch * h, input_len, input_len, cfg.d_kv, True)
        out += _mlp(cfg, enc_tokens, True)
    for _ in range(cfg.num_decoder_layers):
        out += 3 * dense(dec_tokens, cfg.d_model, a, True) + dense(dec_tokens, a, cfg.d_model, True)
        out += attention(batch * h, target_len, target_len, cfg.d_kv, True)
        out += dense(dec_tokens, cfg.d_model, a, True) + dense(dec_tokens, a, cfg.d_model, True)  # cross q, o
        out += 2 * dense(enc_tokens, cfg.d_model, a, True)  # cross k, v
        out += attention(batch * h, target_len, input_len, cfg.d_kv, True)
        out += _mlp(cfg, dec_tokens, True)
    out += dense(dec_tokens, cfg.d_model, cfg.vocab_size, True)
    return out


def decode_matmuls(cfg: T5Config, rows: int, input_len: int, new_tokens: int) -> list[Matmul]:
    """One decode call: encode ``rows`` inputs once, then ``new_tokens`` single-token decoder steps.

    ``rows`` is batch x beams. Step t's self-attention reads the t+1 cached positions (the work a
    cache that grows costs, not a preallocated one's full length); cross keys/values come once.
    """
    a, h = cfg.num_heads * cfg.d_kv, cfg.num_heads
    enc_tokens = rows * input_len
    out: list[Matmul] = []
    for _ in range(cfg.num_encoder_layers):
        out += 3 * dense(enc_tokens, cfg.d_model, a, False) + dense(enc_tokens, a, cfg.d_model, False)
        out += attention(rows * h, input_len, input_len, cfg.d_kv, False)
        out += _mlp(cfg, enc_tokens, False)
    out += cfg.num_decoder_layers * 2 * dense(enc_tokens, cfg.d_model, a, False)
    for t in range(new_tokens):
        for _ in range(cfg.num_decoder_layers):
            out += 3 * dense(rows, cfg.d_model, a, False) + dense(rows, a, cfg.d_model, False)
            out += attention(rows * h, 1, t + 1, cfg.d_kv, False)
            out += dense(rows, cfg.d_model, a, False) + dense(rows, a, cfg.d_model, False)
            out += attention(rows * h, 1, input_len, cfg.d_kv, False)
            out += _mlp(cfg, rows, False)
        out += dense(rows, cfg.d_model, cfg.vocab_size, False)
    return out


@functools.cache
def _einsum(equation: str):  # noqa: ANN202 - a jitted callable
    return jax.jit(functools.partial(jnp.einsum, equation))


def best_seconds(matmul: Matmul, dtype: str, repeats: int) -> float:
    """Best of ``repeats`` calls of the jitted contraction (after warm-up), inputs resident on device."""
    lhs = jax.random.normal(jax.random.key(0), matmul.lhs, jnp.dtype(dtype))
    rhs = jax.random.normal(jax.random.key(1), matmul.rhs, jnp.dtype(dtype))
    fn = _einsum(matmul.equation)
    return min(harness.timed_calls(lambda: fn(lhs, rhs).block_until_ready(), warmup=2, repeats=repeats))


def bound(matmuls: Iterable[Matmul], dtype: str = "float32", repeats: int = 5) -> dict[str, float]:
    """Seconds the workload's matmuls take when each shape runs alone at its best, and their FLOPs."""
    counts = collections.Counter(matmuls)
    seconds = flops = 0.0
    for matmul, count in counts.items():
        seconds += count * best_seconds(matmul, dtype, repeats)
        flops += count * matmul.flops
    return dict(bound_s=seconds, matmul_flops=flops, bound_flops_per_s=flops / seconds, distinct_shapes=len(counts))
