"""Word-level KD losses (distill_jax/training/kd_losses.py) against direct numpy formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.training import kd_losses

V = 11
POLICIES = sorted(kd_losses.MISSING_MASS_POLICIES)
KINDS = ("forward_kl", "reverse_kl", "jsd")


def _logits(seed: int, shape=(2, 5, V), scale: float = 2.0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def _topk(teacher_logits: jnp.ndarray, k: int, temperature: float = 1.0):
    logp = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    vals, ids = jax.lax.top_k(logp, k)
    residual = 1.0 - jnp.sum(jnp.exp(vals), axis=-1)
    return ids, vals, residual


def _np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = p.astype(np.float64), q.astype(np.float64)
    return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0.0), axis=-1)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_at_full_vocab_equals_dense(policy: str, kind: str, temperature: float):
    student, teacher = _logits(0), _logits(1)
    ids, logp, residual = _topk(teacher, V)
    sparse = kd_losses.sparse_kd_per_token(
        student, ids, logp, residual, kind=kind, policy=policy, temperature=temperature
    )
    dense = kd_losses.dense_kd_per_token(student, teacher, kind=kind, temperature=temperature)
    np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-5)
    assert float(jnp.min(dense)) > 0


def test_dense_forward_kl_matches_numpy_and_t_squared():
    student, teacher = _logits(2), _logits(3)
    t = 3.0
    p = np.asarray(jax.nn.softmax(teacher / t)), np.asarray(jax.nn.softmax(student / t))
    got = kd_losses.dense_kd_per_token(student, teacher, temperature=t)
    np.testing.assert_allclose(got, _np_kl(*p) * t * t, rtol=1e-4)
    rev = kd_losses.dense_kd_per_token(student, teacher, kind="reverse_kl", temperature=t)
    np.testing.assert_allclose(rev, _np_kl(p[1], p[0]) * t * t, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_when_student_is_teacher(kind: str):
    logits = _logits(4)
    np.testing.assert_allclose(kd_losses.dense_kd_per_token(logits, logits, kind=kind), 0.0, atol=1e-6)
    # Top-k < V: renormalize and tail_bucket compare the student on the same support, so 0 at any k.
    ids, logp, residual = _topk(logits, 4)
    for policy in ("renormalize", "tail_bucket"):
        got = kd_losses.sparse_kd_per_token(logits, ids, logp, residual, kind=kind, policy=policy)
        np.testing.assert_allclose(got, 0.0, atol=2e-6)


def test_uniform_rest_matches_explicit_distribution():
    student, teacher = _logits(5), _logits(6)
    k = 3
    ids, logp, residual = _topk(teacher, k)
    p = np.full((2, 5, V), 0.0)
    p += (np.asarray(residual) / (V - k))[..., None]
    np.put_along_axis(p, np.asarray(ids), np.exp(np.asarray(logp)), axis=-1)
    q = np.asarray(jax.nn.softmax(student))
    got = kd_losses.sparse_kd_per_token(student, ids, logp, residual, policy="uniform_rest")
    np.testing.assert_allclose(got, _np_kl(p, q), rtol=1e-4)


def test_tail_bucket_matches_explicit_buckets():
    student, teacher = _logits(7), _logits(8)
    ids, logp, residual = _topk(teacher, 3)
    q = np.take_along_axis(np.asarray(jax.nn.softmax(student)), np.asarray(ids), axis=-1)
    p = np.exp(np.asarray(logp))
    pb = np.concatenate([p, np.asarray(residual)[..., None]], -1)
    qb = np.concatenate([q, 1 - q.sum(-1, keepdims=True)], -1)
    got = kd_losses.sparse_kd_per_token(student, ids, logp, residual, policy="tail_bucket")
    np.testing.assert_allclose(got, _np_kl(pb, qb), rtol=1e-4)


def test_temperature_rescaling_of_stored_teacher_is_exact_for_renormalize():
    # Stored at tau=1, trained at T=2: the top-k renormalised at T equals the teacher's top-k at T.
    student, teacher = _logits(9), _logits(10)
    ids, logp, residual = _topk(teacher, 4)
    got = kd_losses.sparse_kd_per_token(student, ids, logp, residual, temperature=2.0)
    ids2, logp2, residual2 = _topk(teacher, 4, temperature=2.0)
    np.testing.assert_array_equal(ids, ids2)
    want = kd_losses.sparse_kd_per_token(student, ids2, logp2, residual2, temperature=2.0, stored_temperature=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_jsd_symmetric_at_half_and_endpoints():
    a, b = _logits(11), _logits(12)
    jsd = lambda x, y, beta: kd_losses.dense_kd_per_token(x, y, kind="jsd", jsd_beta=beta)  # noqa: E731
    np.testing.assert_allclose(jsd(a, b, 0.5), jsd(b, a, 0.5), rtol=1e-5)
    assert float(jnp.max(jsd(a, b, 0.5))) <= np.log(2) + 1e-6  # JS divergence is bounded by log 2
    np.testing.assert_allclose(jsd(a, b, 0.0), kd_losses.dense_kd_per_token(a, b), rtol=1e-6)
    np.testing.assert_allclose(jsd(a, b, 1.0), kd_losses.dense_kd_per_token(a, b, kind="reverse_kl"), rtol=1e-6)
    with pytest.raises(ValueError, match="jsd_beta"):
        kd_losses.divergence("jsd", 1.5)
    with pytest.raises(ValueError, match="use one of"):
        kd_losses.divergence("l2")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_finite_with_padding_and_k_equal_vocab(policy: str, kind: str):
    teacher = _logits(13)
    # Padded positions hold zeros (ids 0, log-prob 0, residual 0), as the pipeline pads them.
    for k in (3, V):
        ids, logp, residual = _topk(teacher, k)
        mask = jnp.asarray(np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32))
        ids, logp, residual = (
            jnp.where(mask[..., None] > 0, ids, 0),
            jnp.where(mask[..., None] > 0, logp, 0.0),
            jnp.where(mask > 0, residual, 0.0),
        )

        def loss(student, ids, logp, residual, mask):
            kd = kd_losses.sparse_kd_per_token(student, ids, logp, residual, kind=kind, policy=policy, temperature=2.0)
            return jnp.sum(kd_losses.mix_with_ce(kd, jnp.zeros_like(kd), mask, 0.5) * mask)

        grad = jax.grad(loss)(_logits(14), ids, logp, residual, mask)
        assert bool(jnp.all(jnp.isfinite(grad)))
        assert float(jnp.abs(grad[0, 3:]).max()) == 0.0  # masked tokens send no gradient


def test_mixing_and_masking_exact():
    kd = jnp.asarray([[1.0, jnp.nan, 3.0]])
    ce = jnp.asarray([[10.0, 20.0, 30.0]])
    mask = jnp.asarray([[1.0, 0.0, 1.0]])
    np.testing.assert_allclose(kd_losses.mix_with_ce(kd, ce, mask, 0.25), [[7.75, 20.0, 23.25]])


def test_schedules():
    for kind, mid in (("constant", 1.0), ("linear", 0.5), ("cosine", 0.5)):
        f = kd_losses.schedule(kind, 1.0, 0.0 if kind != "constant" else 1.0, 100)
        np.testing.assert_allclose([f(0), f(50), f(100), f(500)], [1.0, mid, f(100), f(100)], atol=1e-6)
    cos = kd_losses.schedule("cosine", 0.0, 1.0, 100)
    assert float(cos(10)) < 0.1 < float(kd_losses.schedule("linear", 0.0, 1.0, 100)(11))
    with pytest.raises(ValueError, match="use one of"):
        kd_losses.schedule("step", 0.0, 1.0, 10)
