"""Beam search against HF ``generate`` and sampling properties, on a small random imported T5."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from distill_jax.models.decoding import LogitFilters, beam_search, filter_logits, greedy_decode, sample
from distill_jax.models.hf_t5 import params_from_hf_state_dict
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config

MAX_LEN = 10
SENTENCES = ["Beam search keeps several hypotheses.", "Short one.", "Sampling gives variety."]


@pytest.fixture(scope="module")
def imported():
    """An untied (v1.1-style) random HF T5, its Flax params, ragged ByT5 inputs, and an EOS id it emits early."""
    cfg = T5Config(
        vocab_size=384,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf_model = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf_dict())).eval()
    with torch.no_grad():  # transformers >= 5 ties the head structurally; give v1.1 its own head
        hf_model.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf_model.lm_head.weight) * cfg.d_model**-0.5)
    params = params_from_hf_state_dict({k: v.numpy() for k, v in hf_model.state_dict().items()}, cfg)
    inputs = transformers.ByT5Tokenizer()(SENTENCES, padding=True, return_tensors="pt")
    tokens = jnp.asarray(inputs.input_ids.numpy())
    greedy = np.asarray(
        jax.jit(functools.partial(greedy_decode, T5Transformer(cfg), max_decode_length=MAX_LEN))(params, tokens)
    )
    assert len(np.unique(greedy)) > 3, "degenerate random model"
    values, counts = np.unique(greedy, return_counts=True)
    early_eos = int(values[np.argmax(counts)])  # a token greedy emits often, so hypotheses end before the limit
    return cfg, params, hf_model, inputs, tokens, early_eos


def hf_beam(hf_model, inputs, cfg: T5Config, **settings) -> tuple[np.ndarray, np.ndarray]:
    """HF beam search as [B, n, MAX_LEN] tokens (start token dropped, pad after EOS) and [B, n] scores."""
    n = settings["num_return_sequences"]
    with torch.no_grad():
        out = hf_model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=MAX_LEN,
            min_new_tokens=0,
            eos_token_id=cfg.eos_token_id,
            pad_token_id=cfg.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
            **settings,
        )
    sequences = out.sequences.numpy()[:, 1:]
    sequences = np.pad(sequences, ((0, 0), (0, MAX_LEN - sequences.shape[1])), constant_values=cfg.pad_token_id)
    for row in sequences:  # HF fills after EOS with its own fill value; normalise to pad
        eos = np.flatnonzero(row == cfg.eos_token_id)
        if eos.size:
            row[eos[0] + 1 :] = cfg.pad_token_id
    return sequences.reshape(-1, n, MAX_LEN), out.sequences_scores.numpy().reshape(-1, n)


@pytest.mark.parametrize(
    "num_beams,num_return_sequences,length_penalty,early_eos",
    [(4, 1, 1.0, True), (4, 2, 0.6, True), (4, 2, 1.0, False), (2, 2, 2.0, True), (2, 1, 1.0, False)],
)
def test_beam_search_matches_hf_generate(imported, num_beams, num_return_sequences, length_penalty, early_eos):
    cfg, params, hf_model, inputs, tokens, eos = imported
    cfg = dataclasses.replace(cfg, eos_token_id=eos) if early_eos else cfg
    settings = dict(num_beams=num_beams, num_return_sequences=num_return_sequences, length_penalty=length_penalty)
    decode = jax.jit(functools.partial(beam_search, T5Transformer(cfg), max_decode_length=MAX_LEN, **settings))
    decoded, scores = decode(params, tokens)
    assert decoded.shape == (3, num_return_sequences, MAX_LEN) and decoded.dtype == jnp.int32
    assert scores.shape == (3, num_return_sequences) and scores.dtype == jnp.float32
    expected_tokens, expected_scores = hf_beam(hf_model, inputs, cfg, **settings)
    np.testing.assert_array_equal(decoded, expected_tokens)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4, rtol=0)
    if early_eos and length_penalty <= 1.0:  # a large penalty rightly prefers the long hypotheses
        assert np.any(np.asarray(decoded)[..., -1] == cfg.pad_token_id), "no hypothesis ended early"


def test_one_beam_is_greedy(imported):
    cfg, params, _, _, tokens, eos = imported
    cfg = dataclasses.replace(cfg, eos_token_id=eos)
    model = T5Transformer(cfg)
    beams, _ = jax.jit(functools.partial(beam_search, model, max_decode_length=MAX_LEN, num_beams=1))(params, tokens)
    greedy = jax.jit(functools.partial(greedy_decode, model, max_decode_length=MAX_LEN))(params, tokens)
    np.testing.assert_array_equal(beams[:, 0], greedy)


def jitted_sample(cfg: T5Config, num_return_sequences: int, **filters):
    settings = dict(
        max_decode_length=MAX_LEN, num_return_sequences=num_return_sequences, filters=LogitFilters(**filters)
    )
    return jax.jit(functools.partial(sample, T5Transformer(cfg), **settings))


def test_sampling_is_a_function_of_rng(imported):
    cfg, params, _, _, tokens, _ = imported
    decode = jitted_sample(cfg, num_return_sequences=3)
    first = np.asarray(decode(params, tokens, jax.random.PRNGKey(0)))
    assert first.shape == (3, 3, MAX_LEN) and first.dtype == np.int32
    np.testing.assert_array_equal(first, decode(params, tokens, jax.random.PRNGKey(0)))
    assert not np.array_equal(first, decode(params, tokens, jax.random.PRNGKey(1)))
    assert not np.array_equal(first[:, 0], first[:, 1]), "return sequences of a row should differ"


@pytest.mark.parametrize("settings", [dict(top_k=1), dict(temperature=1e-5)])
def test_sampling_degenerates_to_greedy(imported, settings):
    cfg, params, _, _, tokens, eos = imported
    cfg = dataclasses.replace(cfg, eos_token_id=eos)
    greedy = jax.jit(functools.partial(greedy_decode, T5Transformer(cfg), max_decode_length=MAX_LEN))(params, tokens)
    sampled = jitted_sample(cfg, num_return_sequences=2, **settings)(params, tokens, jax.random.PRNGKey(5))
    np.testing.assert_array_equal(sampled, np.repeat(np.asarray(greedy)[:, None], 2, axis=1))


def test_filter_logits_keeps_top_k_and_the_nucleus():
    logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))

    def kept(**settings) -> np.ndarray:
        return np.isfinite(filter_logits(logits, LogitFilters(**settings)))[0]

    np.testing.assert_array_equal(kept(), [True, True, True, True])
    np.testing.assert_array_equal(kept(top_k=2), [False, True, False, True])
    np.testing.assert_array_equal(kept(top_p=0.6), [False, True, False, True])
    np.testing.assert_array_equal(kept(top_p=0.3), [False, True, False, False])
    np.testing.assert_array_equal(kept(top_p=0.9), [False, True, True, True])
    np.testing.assert_array_equal(kept(top_k=2, top_p=0.9), [False, True, False, True])


@pytest.mark.parametrize("vocab", [7, 384, 32128])
def test_nucleus_matches_a_sorted_prefix_with_ties_and_top_k(vocab):
    """The bisection finds the same nucleus as sorting: the tokens whose strictly-more-likely mass < top_p."""
    rng = np.random.default_rng(vocab)
    logits = rng.normal(size=(16, vocab)).astype(np.float32) * rng.uniform(0.1, 8.0, size=(16, 1)).astype(np.float32)
    logits[:, : vocab // 3] = logits[:, vocab // 3 : 2 * (vocab // 3)]  # many exact ties
    logits[0] = 0.0  # one row entirely tied
    for top_p in (0.05, 0.5, 0.9, 0.999):
        for top_k in (0, 5):
            kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), LogitFilters(top_k=top_k, top_p=top_p))))
            for row, row_kept in zip(logits.astype(np.float64), kept):
                if top_k:
                    row = np.where(row < np.sort(row)[-top_k], -np.inf, row)
                probs = np.exp(row - row.max())
                probs /= probs.sum()
                descending = -np.sort(-row)
                above = np.searchsorted(-descending, -row, side="left")  # how many tokens are strictly more likely
                mass_above = np.concatenate([[0.0], np.cumsum(np.sort(probs)[::-1])])[above]
                np.testing.assert_array_equal(row_kept, mass_above < top_p)


def test_top_p_samples_stay_in_the_first_step_nucleus(imported):
    cfg, params, _, _, tokens, _ = imported
    top_p = 0.3
    start = jnp.full((tokens.shape[0], 1), cfg.decoder_start_token_id, jnp.int32)
    probs = np.asarray(jax.nn.softmax(T5Transformer(cfg).apply({"params": params}, tokens, start)[:, 0]), np.float64)
    nuclei = []
    for row in probs:  # the shortest most-likely prefix whose mass reaches top_p
        order = np.argsort(-row)
        nuclei.append(set(order[: int(np.searchsorted(np.cumsum(row[order]), top_p)) + 1].tolist()))
    assert max(len(nucleus) for nucleus in nuclei) > 1, "nucleus too small to test anything"
    decode = jitted_sample(cfg, top_p=top_p, num_return_sequences=32)
    first_tokens = np.asarray(decode(params, tokens, jax.random.PRNGKey(2)))[:, :, 0]
    for row, nucleus in zip(first_tokens, nuclei):
        assert set(row.tolist()) <= nucleus
    assert any(len(set(row.tolist())) > 1 for row in first_tokens), "sampling should vary inside the nucleus"


def test_sampled_rows_stop_at_eos_and_pad(imported):
    cfg, params, _, _, tokens, eos = imported
    cfg = dataclasses.replace(cfg, eos_token_id=eos)  # cooled towards greedy, which emits this token often
    decode = jitted_sample(cfg, temperature=0.2, num_return_sequences=8)
    sampled = np.asarray(decode(params, tokens, jax.random.PRNGKey(4)))
    stopped = 0
    for row in sampled.reshape(-1, MAX_LEN):
        eos = np.flatnonzero(row == cfg.eos_token_id)
        if eos.size:
            assert np.all(row[eos[0] + 1 :] == cfg.pad_token_id)
            stopped += eos[0] < MAX_LEN - 1
    assert stopped > 0, "no row ended before the length limit"


@pytest.mark.parametrize("row_axis", [0, 1])
@pytest.mark.parametrize("filled", [1, 16, 17, 33, 40])
def test_cache_reorder_moves_the_filled_prefix_like_a_full_gather(row_axis, filled):
    from distill_jax.models.decoding import _reorder_self_attention_cache

    rows, length = 6, 40
    shape = (3, rows, length, 2, 4) if row_axis else (rows, length, 2, 4)
    keys = jax.random.normal(jax.random.key(0), shape)
    cache = {"decoder": {"self_attention": {"cached_key": keys}, "cross_attention": {"cached_key": keys}}}
    parents = jnp.array([1, 1, 0, 5, 3, 3])
    moved = _reorder_self_attention_cache(cache, parents, row_axis, jnp.int32(filled))
    full = jnp.take(keys, parents, axis=row_axis)
    prefix = (slice(None),) * (row_axis + 1) + (slice(0, filled),)
    np.testing.assert_array_equal(moved["decoder"]["self_attention"]["cached_key"][prefix], full[prefix])
    np.testing.assert_array_equal(moved["decoder"]["cross_attention"]["cached_key"], keys)  # shared: never moved
