"""Cached greedy decoding against an uncached reference loop and HF generate."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from distill_jax.models.decoding import greedy_decode
from distill_jax.models.family import init_params
from distill_jax.models.hf_t5 import params_from_hf_state_dict
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config, get_config

MAX_LEN = 10


def jitted_greedy(cfg: T5Config):
    return jax.jit(functools.partial(greedy_decode, T5Transformer(cfg), max_decode_length=MAX_LEN))


def reference_greedy(cfg: T5Config, params, encoder_tokens: jnp.ndarray) -> np.ndarray:
    """Recomputes the whole decoder every step, then pads each row after its first EOS."""
    forward = jax.jit(T5Transformer(cfg).apply)
    batch = encoder_tokens.shape[0]
    decoder_inputs = np.full((batch, MAX_LEN), cfg.decoder_start_token_id, np.int32)
    tokens = np.zeros((batch, MAX_LEN), np.int32)
    for step in range(MAX_LEN):
        logits = forward({"params": params}, encoder_tokens, jnp.asarray(decoder_inputs))
        tokens[:, step] = np.argmax(logits[:, step], axis=-1)
        if step + 1 < MAX_LEN:
            decoder_inputs[:, step + 1] = tokens[:, step]
    for row in tokens:
        eos = np.flatnonzero(row == cfg.eos_token_id)
        if eos.size:
            row[eos[0] + 1 :] = cfg.pad_token_id
    return tokens


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny", dropout_rate=0.0)
    params = nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(3)))
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, cfg.vocab_size, size=(3, 12)).astype(np.int32)
    tokens[1, 7:] = cfg.pad_token_id
    tokens[2, 4:] = cfg.pad_token_id
    return cfg, params, jnp.asarray(tokens)


def test_matches_uncached_reference(tiny):
    cfg, params, tokens = tiny
    decoded = jitted_greedy(cfg)(params, tokens)
    assert decoded.shape == (3, MAX_LEN) and decoded.dtype == jnp.int32
    np.testing.assert_array_equal(decoded, reference_greedy(cfg, params, tokens))


def test_each_row_stops_at_its_eos(tiny):
    cfg, params, tokens = tiny
    free_running = np.asarray(jitted_greedy(cfg)(params, tokens))
    # Declare a token row 0 emits mid-sequence as EOS: greedy choices before it are unchanged,
    # row 0 must pad afterwards while rows that never emit it keep going.
    eos_cfg = dataclasses.replace(cfg, eos_token_id=int(free_running[0, 3]))
    decoded = np.asarray(jitted_greedy(eos_cfg)(params, tokens))
    np.testing.assert_array_equal(decoded, reference_greedy(eos_cfg, params, tokens))
    stop = int(np.flatnonzero(free_running[0] == eos_cfg.eos_token_id)[0])
    assert stop <= 3
    np.testing.assert_array_equal(decoded[0, : stop + 1], free_running[0, : stop + 1])
    assert np.all(decoded[0, stop + 1 :] == cfg.pad_token_id)


def test_packed_segment_ids_decode_like_padding(tiny):
    cfg, params, tokens = tiny
    segment_ids = (tokens != cfg.pad_token_id).astype(jnp.int32)
    decode = jitted_greedy(cfg)
    np.testing.assert_array_equal(decode(params, tokens, encoder_segment_ids=segment_ids), decode(params, tokens))


@pytest.mark.parametrize("feed_forward_proj,tied,seed", [("gated-gelu", False, 0), ("relu", True, 2)])
def test_matches_hf_generate(feed_forward_proj, tied, seed):
    cfg = T5Config(
        vocab_size=384,
        d_model=64,
        d_kv=16,
        d_ff=96,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout_rate=0.0,
        feed_forward_proj=feed_forward_proj,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf_dict())).eval()
    with torch.no_grad():
        if tied:  # a random tied head mostly echoes its input token; shrink it so the layers matter
            model.shared.weight.mul_(0.05)
        else:  # transformers >= 5 ties the head structurally; give v1.1 its own head
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * cfg.d_model**-0.5)
    params = params_from_hf_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, cfg)
    inputs = transformers.ByT5Tokenizer()(
        ["Greedy decoding, one token at a time.", "Short one.", "Caches make it fast."],
        padding=True,
        return_tensors="pt",
    )

    def hf_generate(eos: int) -> np.ndarray:
        with torch.no_grad():
            out = model.generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=MAX_LEN,
                min_new_tokens=0,
                eos_token_id=eos,
                pad_token_id=cfg.pad_token_id,
            ).numpy()[:, 1:]  # drop the start token
        return np.pad(out, ((0, 0), (0, MAX_LEN - out.shape[1])), constant_values=cfg.pad_token_id)

    free_running = hf_generate(cfg.eos_token_id)
    assert len(np.unique(free_running)) > 3, "degenerate random model"
    eos = int(free_running[0, 2])  # a token row 0 emits, so generation really stops early
    for eos_id in (cfg.eos_token_id, eos):
        eos_cfg = dataclasses.replace(cfg, eos_token_id=eos_id)
        decoded = jitted_greedy(eos_cfg)(params, jnp.asarray(inputs.input_ids.numpy()))
        np.testing.assert_array_equal(decoded, hf_generate(eos_id))
