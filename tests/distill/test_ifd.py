"""IFD scores equal PPL(y|x)/PPL(y) of the student's own greedy answer, computed independently."""

import jax
import numpy as np

from distill_jax.distill.ifd import ifd_scores
from distill_jax.models.decoding import greedy_decode
from distill_jax.models.t5 import shift_right
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state

INPUTS = ["What is 12 + 30?", "Reverse the word 'apple'.", "Is 7 even or odd?", "x", "Sort the letters of 'tiger'."]


def _reference_log_ifd(run, params, text, max_new_tokens):
    tok, model = run.tokenizer, run.model
    x = np.asarray(tok.encode(text))[None, :]
    y = np.asarray(greedy_decode(model, params, x, max_decode_length=max_new_tokens))[0]
    eos = np.flatnonzero(y == tok.eos_id)
    y = y[: eos[0] + 1] if eos.size else y  # The answer: up to and including its EOS.

    def mean_ce(encoder_tokens):
        logits = model.apply({"params": params}, encoder_tokens, np.asarray(shift_right(y[None, :], 0)))
        logp = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)[0]
        return -np.mean(logp[np.arange(len(y)), y])

    return mean_ce(x) - mean_ce(np.array([[tok.eos_id]]))


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
