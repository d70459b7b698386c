"""IFD scores equal PPL(y|x)/PPL(y) of the student's own greedy answer, computed independently."""

import functools

import jax
import numpy as np

from distill_jax.distill.ifd import ifd_scores
from distill_jax.models.decoding import greedy_decode
from distill_jax.models.encoder_decoder import shift_right
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state

INPUTS = ["What is 12 + 30?", "Reverse the word 'apple'.", "Is 7 even or odd?", "x", "Sort the letters of 'tiger'."]


@functools.cache
def _jitted(model, max_new_tokens):
    return jax.jit(functools.partial(greedy_decode, model, max_decode_length=max_new_tokens)), jax.jit(model.apply)


def _reference_log_ifd(run, params, text, max_new_tokens):
    """One text at a time, unsharded. Encoder inputs are padded to one length and the answer to
    max_new_tokens (padding is masked in the encoder and comes after the answer in the causal
    decoder, so it changes no score) only so that each jitted function compiles once."""
    tok, model = run.tokenizer, run.model
    x = np.zeros((1, 32), np.int32)
    ids = tok.encode(text)
    x[0, : len(ids)] = ids
    decode, apply = _jitted(model, max_new_tokens)
    y = np.asarray(decode(params, x))[0]
    eos = np.flatnonzero(y == tok.eos_id)
    length = eos[0] + 1 if eos.size else len(y)  # The answer: up to and including its EOS.
    y = np.where(np.arange(len(y)) < length, y, 0)

    def mean_ce(encoder_tokens):
        logits = apply({"params": params}, encoder_tokens, np.asarray(shift_right(y[None, :], 0)))
        logp = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)[0]
        return -np.mean(logp[np.arange(length), y[:length]])

    empty = np.zeros_like(x)
    empty[0, 0] = tok.eos_id
    return mean_ce(x) - mean_ce(empty)


def test_ifd_matches_an_independent_computation(small_train_config):
    cfg = small_train_config()
    run = setup_run(cfg)
    state = create_train_state(run.model_config, run.tx, run.mesh, run.rules, seed=3)
    # 8 devices; two batches of 8, the last one ragged. Duplicated inputs must score the same wherever they land.
    scores = ifd_scores(run, state.params, INPUTS * 2 + ["y"], batch_size=8, max_new_tokens=12)
    np.testing.assert_allclose(scores[:5], scores[5:10], atol=1e-5)
    host_params = jax.tree.map(np.asarray, state.params)
    expected = [_reference_log_ifd(run, host_params, t, 12) for t in INPUTS]
    np.testing.assert_allclose(scores[:5], expected, atol=2e-4)
