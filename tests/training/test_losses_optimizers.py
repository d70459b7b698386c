"""Loss functions and optimizer/schedule construction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax.config import default_config
from distill_jax.training import losses, optimizers


def test_per_domain_sums_split_tokens_by_domain_even_within_a_packed_row():
    logits = jnp.zeros((3, 3, 4)).at[:, :, 2].set(5.0)  # Always predicts token 2.
    # Row 0: one example of domain 0; row 1: a domain-1 example then a domain-2 one; row 2: domain 1.
    targets = jnp.array([[2, 1, 0], [1, 2, 1], [3, 1, 0]])
    weights = jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 0]], jnp.float32)
    domains = jnp.array([[0, 0, 0], [1, 2, 2], [1, 1, 0]])
    total, sums = losses.seq2seq_metric_sums(logits, targets, weights, domains, num_domains=3, eos_id=1)
    np.testing.assert_allclose(sums["token_count"], [2, 3, 2])
    np.testing.assert_allclose(sums["correct_sum"], [1, 0, 1])
    np.testing.assert_allclose(sums["example_count"], [1, 2, 1])
    assert float(total) == pytest.approx(float(sums["ce_sum"].sum()), rel=1e-6)


@pytest.mark.parametrize("decay", ["cosine", "linear", "rsqrt", "constant"])
def test_schedule_warms_up_to_the_peak(decay):
    cfg = default_config().optimizer
    cfg.decay = decay
    sched = optimizers.learning_rate_schedule(cfg, total_steps=1000)
    assert float(sched(0)) == pytest.approx(0.0)
    assert float(sched(cfg.warmup_steps)) == pytest.approx(cfg.learning_rate, rel=1e-3)
    assert float(sched(999)) <= cfg.learning_rate * 1.0001
    if decay in ("cosine", "linear"):
        assert float(sched(1000)) == pytest.approx(cfg.learning_rate * cfg.end_lr_fraction, rel=1e-3)


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_optimizers_reduce_a_quadratic_and_skip_decay_on_vectors(name):
    cfg = default_config().optimizer
    cfg.name, cfg.warmup_steps, cfg.learning_rate = name, 0, 0.1
    tx = optimizers.make_optimizer(cfg, total_steps=100)
    params = {"w": jnp.ones((4, 4)), "scale": jnp.ones((4,))}
    state = tx.init(params)

    def loss(p):
        return jnp.sum(p["w"] ** 2) + jnp.sum((p["scale"] - 2.0) ** 2)

    start = loss(params)
    for _ in range(20):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * start


def test_unknown_optimizer_and_decay_are_clear_errors():
    cfg = default_config().optimizer
    cfg.name = "sgdx"
    with pytest.raises(ValueError, match="adamw or adafactor"):
        optimizers.make_optimizer(cfg, 10)
    cfg = default_config().optimizer
    cfg.decay = "exp"
    with pytest.raises(ValueError, match="cosine, linear"):
        optimizers.make_optimizer(cfg, 10)
