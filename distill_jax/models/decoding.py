"""Greedy, sampled and beam-search decoding for ``T5Transformer`` and ``BartTransformer`` with a KV cache.

Every decoder here is a pure function of arrays once ``model`` and the decode settings are
fixed, so jit it as::

    decode_fn = jax.jit(functools.partial(greedy_decode, model, max_decode_length=64))
    tokens = decode_fn(params, encoder_input_tokens)

(``encoder_segment_ids`` may be passed as a keyword argument to the jitted function; ``sample``
also takes its ``rng`` as an array argument).

All three run the encoder once on the real batch, then tile its output to the decoded rows
(``num_beams`` or ``num_return_sequences`` copies of each input row, adjacent); the first decoder
step creates the cache and the remaining steps run in one ``lax.while_loop`` that exits early.
Tokens are [.., max_decode_length] int32 without the start token, ``pad_token_id`` after EOS.
No token is forced or banned: HF ``generate`` gives the same tokens with ``forced_bos_token_id``,
``forced_eos_token_id`` and ``no_repeat_ngram_size`` unset and ``min_new_tokens=0`` (BART's
configs set some of these).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from distill_jax.models.family import Model

# Additive score for excluded candidates; HF uses the same constant, and matching it keeps the
# float32 arithmetic (and so the tie-breaking) of beam search identical to ``generate``.
_LARGE_NEGATIVE = -1.0e9

StepFn = Callable[[Any, jax.Array], tuple[jax.Array, Any]]
ChooseFn = Callable[[jax.Array, jax.Array], jax.Array]


def _decoder_step(
    model: Model,
    params: Any,
    encoder_input_tokens: jax.Array,
    encoder_segment_ids: jax.Array | None,
    max_decode_length: int,
    copies: int,
) -> StepFn:
    """Encodes once and returns ``step(cache, tokens [N]) -> (logits [N, vocab] f32, cache)``.

    N is ``copies`` times the batch: the encoder output, the encoder tokens (for the cross-attention
    padding mask) and the segment ids are repeated row by row *after* the encoder ran, so beams and
    return sequences cost decoder work only. ``cache=None`` makes the step create the cache.
    """
    variables = {"params": params}
    encoded = model.apply(variables, encoder_input_tokens, encoder_segment_ids=encoder_segment_ids, method="encode")
    encoded, encoder_input_tokens, encoder_segment_ids = jax.tree.map(
        lambda x: jnp.repeat(x, copies, axis=0), (encoded, encoder_input_tokens, encoder_segment_ids)
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
            method="decode",
        )
        return logits[:, -1].astype(jnp.float32), mutated["cache"]

    return step


def _start_tokens(model: Model, rows: int) -> jax.Array:
    return jnp.full((rows,), model.config.decoder_start_token_id, jnp.int32)


def _decode_rows(model: Model, step: StepFn, rows: int, max_decode_length: int, choose: ChooseFn) -> jax.Array:
    """Independent per-row decoding of ``step``'s ``rows`` (``_decoder_step``): ``choose(logits [N, vocab],
    step)`` picks each next token.

    Returns [N, max_decode_length]; a row is padded after its EOS and the loop exits once every
    row has produced one (greedy and sampling differ only in ``choose``).
    """
    cfg = model.config
    logits, cache = step(None, _start_tokens(model, rows))
    first = choose(logits, jnp.array(0, jnp.int32))
    output = jnp.full((rows, max_decode_length), cfg.pad_token_id, jnp.int32).at[:, 0].set(first)

    def cond(state: tuple) -> jax.Array:
        index, _, _, _, finished = state
        return (index < max_decode_length) & ~jnp.all(finished)

    def body(state: tuple) -> tuple:
        index, previous, cache, output, finished = state
        logits, cache = step(cache, previous)
        token = jnp.where(finished, cfg.pad_token_id, choose(logits, index))
        output = jax.lax.dynamic_update_slice(output, token[:, None], (0, index))
        return index + 1, token, cache, output, finished | (token == cfg.eos_token_id)

    state = (jnp.array(1, jnp.int32), first, cache, output, first == cfg.eos_token_id)
    return jax.lax.while_loop(cond, body, state)[3]


def greedy_decode(
    model: Model,
    params: Any,
    encoder_input_tokens: jax.Array,
    *,
    max_decode_length: int,
    encoder_segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Argmax decoding: returns [B, max_decode_length] int32 tokens, start token excluded.

    A row's tokens after its EOS are ``pad_token_id``, as in HF ``generate``.
    """
    step = _decoder_step(model, params, encoder_input_tokens, encoder_segment_ids, max_decode_length, 1)
    argmax = lambda logits, _: jnp.argmax(logits, axis=-1).astype(jnp.int32)  # noqa: E731
    return _decode_rows(model, step, encoder_input_tokens.shape[0], max_decode_length, argmax)


def greedy_decode_scored(
    model: Model,
    params: Any,
    encoder_input_tokens: jax.Array,
    *,
    max_decode_length: int,
    encoder_segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy decoding that also returns each step's log-probability of the chosen token.

    Returns ``(tokens [B, T] int32, logprobs [B, T] float32)``; both are padding (``pad_token_id``,
    0.0) after a row's EOS. The log-probs come from the cached decoder, so comparing them with a
    teacher-forced pass over the same tokens checks that cached decoding computes what training
    optimises (``evaluation.consistency``).
    """
    cfg = model.config
    step = _decoder_step(model, params, encoder_input_tokens, encoder_segment_ids, max_decode_length, 1)
    rows = encoder_input_tokens.shape[0]

    def pick(logits: jax.Array, finished: jax.Array) -> tuple[jax.Array, jax.Array]:
        logp = jax.nn.log_softmax(logits, axis=-1)
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        chosen = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
        return jnp.where(finished, cfg.pad_token_id, token), jnp.where(finished, 0.0, chosen)

    logits, cache = step(None, _start_tokens(model, rows))
    first, first_logp = pick(logits, jnp.zeros((rows,), jnp.bool_))
    tokens = jnp.full((rows, max_decode_length), cfg.pad_token_id, jnp.int32).at[:, 0].set(first)
    logprobs = jnp.zeros((rows, max_decode_length), jnp.float32).at[:, 0].set(first_logp)

    def body(index: int, state: tuple) -> tuple:
        previous, cache, tokens, logprobs, finished = state
        logits, cache = step(cache, previous)
        token, logp = pick(logits, finished)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, index))
        logprobs = jax.lax.dynamic_update_slice(logprobs, logp[:, None], (0, index))
        return token, cache, tokens, logprobs, finished | (token == cfg.eos_token_id)

    state = (first, cache, tokens, logprobs, first == cfg.eos_token_id)
    _, _, tokens, logprobs, _ = jax.lax.fori_loop(1, max_decode_length, body, state)
    return tokens, logprobs


class LogitFilters(NamedTuple):
    """What sampling draws from: logits / temperature, cut to the top k (0: all), then to the top_p nucleus."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def filter_logits(logits: jax.Array, filters: LogitFilters) -> jax.Array:
    """Temperature, then top-k, then nucleus filtering of float32 ``logits`` [N, vocab].

    The order and the tie handling follow HF's warpers: excluded tokens get ``-inf``; top-k keeps
    every token tied with the k-th; the nucleus is the shortest prefix of the descending
    distribution whose mass reaches ``top_p`` (the most likely token always stays).
    """
    temperature, top_k, top_p = filters
    logits = logits.astype(jnp.float32) / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        logits = _keep_nucleus(logits, top_p)
    return logits


def _ordered_int32(x: jax.Array) -> jax.Array:
    """An int32 image of float32 ``x`` with the same order (negative floats' bit patterns run backwards)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, jnp.int32(-(2**31)) - bits - 1, bits)


def _keep_nucleus(logits: jax.Array, top_p: float) -> jax.Array:
    """``logits`` with every token outside the nucleus set to ``-inf``.

    The nucleus keeps token i when the mass of the tokens strictly more likely than i is below
    ``top_p``; that mass, S(v), falls as v rises, so the threshold is the smallest logit v with
    S(v) < top_p. A bisection over the 2**32 ordered keys finds it exactly in 32 masked sums over
    the vocabulary, where sorting it (as HF does) costs ~9x more on XLA CPU at a 32k vocabulary.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    keys = _ordered_int32(logits)

    def halve(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        low, high = bounds  # the threshold lies in [low, high]; S(high) < top_p holds throughout
        middle = (low & high) + ((low ^ high) >> 1)  # floor((low + high) / 2) without int32 overflow
        inside = jnp.sum(jnp.where(keys > middle[:, None], probs, 0.0), axis=-1) < top_p
        return jnp.where(inside, low, middle + 1), jnp.where(inside, middle, high)

    bounds = (jnp.min(keys, axis=-1), jnp.max(keys, axis=-1))
    threshold = jax.lax.fori_loop(0, 32, halve, bounds)[1]  # the key of the smallest logit kept
    return jnp.where(keys < threshold[:, None], -jnp.inf, logits)


def sample(
    model: Model,
    params: Any,
    encoder_input_tokens: jax.Array,
    rng: jax.Array,
    *,
    max_decode_length: int,
    filters: LogitFilters = LogitFilters(),
    num_return_sequences: int = 1,
    encoder_segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Ancestral sampling: returns [B, num_return_sequences, max_decode_length] int32 tokens.

    Each step draws from ``filter_logits`` with a key folded from ``rng`` and the step number, so
    the output is a deterministic function of ``rng``; the ``num_return_sequences`` copies of a row
    draw independently. Rows stop (and pad) at their own EOS.
    """
    if filters.temperature <= 0.0:
        raise ValueError(f"temperature must be > 0 (use greedy_decode for argmax), got {filters.temperature}")
    if not 0.0 < filters.top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {filters.top_p}")

    def choose(logits: jax.Array, index: jax.Array) -> jax.Array:
        filtered = filter_logits(logits, filters)
        return jax.random.categorical(jax.random.fold_in(rng, index), filtered, axis=-1).astype(jnp.int32)

    copies = num_return_sequences
    step = _decoder_step(model, params, encoder_input_tokens, encoder_segment_ids, max_decode_length, copies)
    tokens = _decode_rows(model, step, encoder_input_tokens.shape[0] * copies, max_decode_length, choose)
    return tokens.reshape(encoder_input_tokens.shape[0], num_return_sequences, max_decode_length)


# Positions per prefix bucket of the beam cache reorder: a step gathers the filled prefix rounded up
# to a multiple of this, not all max_decode_length positions (the whole cache every step made beam 4
# 0.88x HF generate at batch 64, issue 19).
_REORDER_BUCKET = 16


def _reorder_self_attention_cache(cache: Any, rows: jax.Array, row_axis: int, filled: jax.Array) -> Any:
    """Gathers the self-attention keys/values of the surviving beams (flat row indices [B * k]).

    Cross-attention keys/values are identical across a row's beams and the step counter is shared,
    so only the self-attention entries move, and of those only the first ``filled`` positions (the
    rest are unwritten; a later step overwrites its position before reading it). Rows are axis 1 of a
    scanned model's cache (axis 0 stacks the layers), axis 0 otherwise; positions the next axis.
    The prefix is gathered in one of a few static lengths (multiples of _REORDER_BUCKET) chosen by
    ``lax.switch``, since a traced length cannot size an array.
    """
    length_axis = row_axis + 1
    entries = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache) if _is_self(path)]
    if not entries:
        return cache
    max_length = entries[0].shape[length_axis]
    lengths = sorted(
        {min(max_length, b) for b in range(_REORDER_BUCKET, max_length + _REORDER_BUCKET, _REORDER_BUCKET)}
    )

    def gather_prefix(length: int) -> Callable[[list[jax.Array]], list[jax.Array]]:
        def gather(leaves: list[jax.Array]) -> list[jax.Array]:
            out = []
            for leaf in leaves:
                prefix = jax.lax.slice_in_dim(leaf, 0, length, axis=length_axis)
                moved = jnp.take(prefix, rows, axis=row_axis)
                out.append(jax.lax.dynamic_update_slice_in_dim(leaf, moved, 0, axis=length_axis))
            return out

        return gather

    bucket = jnp.searchsorted(jnp.asarray(lengths), filled, side="left")
    moved = iter(jax.lax.switch(bucket, [gather_prefix(n) for n in lengths], entries))
    return jax.tree_util.tree_map_with_path(lambda path, leaf: next(moved) if _is_self(path) else leaf, cache)


def _is_self(path: tuple) -> bool:
    return "self_attention" in jax.tree_util.keystr(path)


def _take(x: jax.Array, indices: jax.Array) -> jax.Array:
    """``x`` [B, n, ...] gathered along axis 1 by ``indices`` [B, m]."""
    return jnp.take_along_axis(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(
    model: Model,
    params: Any,
    encoder_input_tokens: jax.Array,
    *,
    max_decode_length: int,
    num_beams: int,
    length_penalty: float = 1.0,
    num_return_sequences: int = 1,
    encoder_segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with HF ``generate`` semantics (``do_sample=False``, ``early_stopping=False``).

    Returns the ``num_return_sequences`` best finished hypotheses per row, best first: tokens
    [B, n, max_decode_length] int32 (padded after EOS) and scores [B, n] float32, a hypothesis'
    summed log-probabilities divided by ``generated_length ** length_penalty`` (EOS counted).

    It mirrors HF step for step so the tokens are identical: each step keeps the ``2 * num_beams``
    best continuations; the best ``num_beams`` of those that do not end (EOS, or the length limit)
    keep running, while ending ones ranked within the first ``num_beams`` compete, length
    normalised, for the ``num_beams`` finished slots. A row stops accepting hypotheses once all its
    slots are full and its best running beam, normalised by the current length (HF's heuristic,
    not a bound when ``length_penalty > 0``), cannot beat the worst of them; the loop exits when
    no row can improve.
    """
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences must be in [1, num_beams={num_beams}], got {num_return_sequences}")
    cfg = model.config
    batch = encoder_input_tokens.shape[0]
    candidates = 2 * num_beams  # with one EOS id, at least num_beams candidates never end on EOS
    step = _decoder_step(model, params, encoder_input_tokens, encoder_segment_ids, max_decode_length, num_beams)
    beam_rows = jnp.arange(batch)[:, None] * num_beams
    row_axis = 1 if cfg.scan_layers else 0

    def advance(state: tuple, logits: jax.Array) -> tuple:
        """One beam update from this step's logits [B * k, vocab]; reorders the cache in ``state``."""
        index, running, running_scores, cache, finished, finished_scores, is_finished, improvable = state
        # The step's best `candidates` continuations are among each beam's own best `candidates`
        # tokens, so the log-softmax is taken of those alone (a logsumexp reads the vocabulary, nothing
        # [B * k, vocab] is written) and the ranking runs over k * candidates, not k * vocab, entries.
        # Ties keep HF's order: beam first, then token id, as a flat top-k over k * vocab breaks them.
        beam_top, beam_tokens = jax.lax.top_k(logits, candidates)
        log_probs = (beam_top - jax.nn.logsumexp(logits, axis=-1, keepdims=True)).reshape(batch, num_beams, -1)
        totals = (running_scores[:, :, None] + log_probs).reshape(batch, -1)
        top_scores, top_flat = jax.lax.top_k(totals, candidates)
        parents = top_flat // candidates
        tokens = _take(beam_tokens.reshape(batch, -1), top_flat).astype(jnp.int32)
        top_sequences = _take(running, parents).at[:, :, index].set(tokens)
        ends = (tokens == cfg.eos_token_id) | (index + 1 >= max_decode_length)

        running_candidates = top_scores + ends * _LARGE_NEGATIVE
        running_scores, keep = jax.lax.top_k(running_candidates, num_beams)
        running = _take(top_sequences, keep)
        cache = _reorder_self_attention_cache(
            cache, (beam_rows + _take(parents, keep)).reshape(-1), row_axis, index + 1
        )

        just_finished = ends & (jnp.arange(candidates) < num_beams)
        normalised = top_scores / ((index + 1).astype(jnp.float32) ** length_penalty)
        normalised += (~improvable)[:, None] * _LARGE_NEGATIVE
        normalised += (~just_finished) * _LARGE_NEGATIVE
        finished_scores, best = jax.lax.top_k(jnp.concatenate([finished_scores, normalised], axis=1), num_beams)
        finished = _take(jnp.concatenate([finished, top_sequences], axis=1), best)
        is_finished = _take(jnp.concatenate([is_finished, just_finished], axis=1), best)

        best_possible = running_scores[:, :1] / ((index + 1).astype(jnp.float32) ** length_penalty)
        worst_finished = jnp.where(is_finished, jnp.min(finished_scores, axis=1, keepdims=True), _LARGE_NEGATIVE)
        improvable &= jnp.any(best_possible > worst_finished, axis=1)
        return index + 1, running, running_scores, cache, finished, finished_scores, is_finished, improvable

    logits, cache = step(None, _start_tokens(model, batch * num_beams))
    empty = jnp.full((batch, num_beams, max_decode_length), cfg.pad_token_id, jnp.int32)
    # Only the first beam is live at the start, so the first step does not pick k copies of one token.
    first_scores = jnp.zeros((batch, num_beams), jnp.float32).at[:, 1:].set(_LARGE_NEGATIVE)
    unfinished_scores = jnp.full((batch, num_beams), _LARGE_NEGATIVE, jnp.float32)
    no_beams = jnp.zeros((batch, num_beams), jnp.bool_)
    start = (jnp.array(0, jnp.int32), empty, first_scores, cache, empty, unfinished_scores, no_beams)
    state = advance((*start, jnp.ones((batch,), jnp.bool_)), logits)

    def cond(state: tuple) -> jax.Array:
        return (state[0] < max_decode_length) & jnp.any(state[-1])

    def body(state: tuple) -> tuple:
        index, running = state[0], state[1]
        logits, cache = step(state[3], running[:, :, index - 1].reshape(-1))
        return advance((*state[:3], cache, *state[4:]), logits)

    state = jax.lax.while_loop(cond, body, state)
    return state[4][:, :num_return_sequences], state[5][:, :num_return_sequences]
