"""The model wrapper: its cross-entropy, its teacher-forced scores and its greedy prediction agree."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill_jax.models.family import init_params
from distill_jax.models.seq2seq import Seq2SeqModel, cross_entropy_with_z_loss
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import get_config


def test_cross_entropy_matches_optax_and_z_loss_adds_log_z_squared():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, size=(2, 5)))
    loss, ce = cross_entropy_with_z_loss(logits, targets)
    np.testing.assert_allclose(ce, optax.softmax_cross_entropy_with_integer_labels(logits, targets), rtol=1e-6)
    np.testing.assert_allclose(loss, ce, rtol=1e-6)
    loss_z, _ = cross_entropy_with_z_loss(logits, targets, z_loss=0.1)
    np.testing.assert_allclose(loss_z - ce, 0.1 * jax.nn.logsumexp(logits, -1) ** 2, rtol=1e-5)


def test_label_smoothing_is_zero_for_the_smoothed_target_distribution():
    vocab, s = 7, 0.1
    target = 3
    probs = np.full((vocab,), s / (vocab - 1))
    probs[target] = 1 - s
    logits = jnp.log(jnp.asarray(probs))[None, None, :]
    loss, _ = cross_entropy_with_z_loss(logits, jnp.array([[target]]), label_smoothing=s)
    assert float(loss[0, 0]) == pytest.approx(0.0, abs=1e-5)


def test_score_of_the_greedy_prediction_is_its_own_argmax_and_matches_a_plain_forward():
    cfg = get_config("tiny", dropout_rate=0.0)
    model = Seq2SeqModel(T5Transformer(cfg))
    params = nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(3)))
    tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, size=(3, 12)).astype(np.int32)
    tokens[1, 7:] = cfg.pad_token_id
    predicted = jax.jit(lambda p, x: model.predict(p, x, max_decode_length=8))(params, tokens)
    weights = jnp.ones(predicted.shape, jnp.float32)
    ce_sum, count, forced = jax.jit(model.score)(params, tokens, predicted, weights)
    # Decoding and teacher-forced scoring compute the same thing: every greedy token is the forced argmax.
    assert bool(jnp.all(forced)) and np.allclose(count, 8)
    decoder_inputs = jnp.concatenate([jnp.full((3, 1), cfg.decoder_start_token_id), predicted[:, :-1]], axis=1)
    logits = T5Transformer(cfg).apply({"params": params}, tokens, decoder_inputs)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, predicted).sum(-1)
    np.testing.assert_allclose(ce_sum, expected, rtol=1e-5)
    # A wrong target token is caught.
    _, _, forced = model.score(params, tokens, predicted.at[0, 0].set((predicted[0, 0] + 1) % cfg.vocab_size), weights)
    assert not bool(forced[0]) and bool(forced[1])
