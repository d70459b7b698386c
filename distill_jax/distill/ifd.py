"""IFD scores: how much the input actually helps the student produce its own answer.

IFD(x, y) = PPL(y | x) / PPL(y) (Li et al. 2024, as BalDistill uses it), where y is what the
*current student* generates for x (greedy, up to `max_new_tokens`), PPL(y | x) the perplexity of
those tokens given x, and PPL(y) their perplexity given nothing. A high score means the student
cannot yet use the input to produce the answer: the examples worth buying. Scoring costs no teacher
budget.

The paper's students are decoder-only, where "no prompt" means the answer alone; for this
encoder-decoder student it means an empty encoder input (just EOS). Both perplexities are the
exponential of the mean cross-entropy over y's tokens up to and including its EOS.

Batches are fixed-shape and sharded over the mesh's data axes; each process feeds its slice of every
global batch and every process ends with all scores, so multi-host selection agrees everywhere.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from distill_jax.models.seq2seq import Seq2SeqModel
from distill_jax.training.inference import InferenceRunner
from distill_jax.training.run_setup import RunSetup, forward_batch_size, per_process_batch_size


def answer_weights(tokens: jax.Array, eos_id: int) -> jax.Array:
    """1.0 on generated tokens up to and including the first EOS, 0.0 after (HF-style padding)."""
    is_eos = (tokens == eos_id).astype(jnp.int32)
    before_or_at_first_eos = (jnp.cumsum(is_eos, axis=-1) - is_eos) == 0
    return before_or_at_first_eos.astype(jnp.float32)


def mean_answer_ce(model: Seq2SeqModel, params: Any, encoder_tokens: jax.Array, answer: jax.Array) -> jax.Array:
    """[B] mean cross-entropy of `answer` tokens given `encoder_tokens`."""
    ce_sum, count, _ = model.score(params, encoder_tokens, answer, answer_weights(answer, model.config.eos_token_id))
    return ce_sum / jnp.maximum(count, 1.0)


def _score_batch(model: Seq2SeqModel, max_new_tokens: int, params: Any, encoder_tokens: jax.Array) -> jax.Array:
    answer = model.predict(params, encoder_tokens, max_decode_length=max_new_tokens)
    # An empty input: EOS, then padding (BART's tokenizers pad with 1, not T5's 0).
    no_prompt = jnp.full_like(encoder_tokens, model.config.pad_token_id).at[:, 0].set(model.config.eos_token_id)
    conditioned = mean_answer_ce(model, params, encoder_tokens, answer)
    unconditioned = mean_answer_ce(model, params, no_prompt, answer)
    # log IFD = CE(y|x) - CE(y): the ratio of perplexities, computed without overflowing exp().
    return conditioned - unconditioned


def ifd_scores(
    run: RunSetup,
    params: Any,
    inputs: Sequence[str],
    *,
    batch_size: int,
    max_new_tokens: int,
    desc: str = "IFD",
) -> np.ndarray:
    """IFD of every input under the student `params` ([len(inputs)] float64, log scale: log PPL ratio).

    Inputs longer than data.max_input_len are cut to it (scoring only ranks candidates).
    """
    tokenizer = run.tokenizer
    max_input_len = run.config.data.max_input_len
    global_batch = forward_batch_size(batch_size, run, "distill.ifd_batch_size")
    runner = InferenceRunner(run.mesh, run.rules, per_process_batch_size(global_batch, run, "distill.ifd_batch_size"))
    score = runner.jit(functools.partial(_score_batch, Seq2SeqModel(run.model), max_new_tokens))
    out = np.zeros(len(inputs), np.float64)
    num_batches = math.ceil(len(inputs) / global_batch)
    for b in tqdm(range(num_batches), desc=desc, unit="batch", disable=jax.process_index() != 0 or num_batches < 2):
        start = b * global_batch
        rows = []
        for ids in tokenizer.encode_batch([inputs[i] for i in runner.local_rows(start, len(inputs))]):
            ids = ids[:max_input_len]
            ids[-1] = tokenizer.eos_id
            rows.append(ids)
        tokens = runner.token_block(rows, max_input_len, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
        # Every process ends with every score: multi-host selection agrees everywhere.
        values = np.asarray(multihost_utils.process_allgather(score(params, tokens), tiled=True))
        end = min(start + global_batch, len(inputs))
        out[start:end] = values[: end - start]
    return out
