"""attention.attend: model.attention_impl=jax (jax.nn.dot_product_attention, cuDNN's kernel on GPU) computes what the einsum path does."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.models import family
from distill_jax.models.decoding import beam_search, greedy_decode


@pytest.fixture(scope="module", params=["tiny", "bart-tiny"])
def model_and_params(request):
    config = family.preset_config(request.param, vocab_size=384, dropout_rate=0.0)
    return config, jax.tree.map(np.asarray, nn.unbox(family.init_params(config, jax.random.key(0))))


def _tokens(config):
    rng = np.random.default_rng(0)
    encoder = rng.integers(3, config.vocab_size, size=(3, 12)).astype(np.int32)
    encoder[1, 7:] = config.pad_token_id
    decoder = rng.integers(3, config.vocab_size, size=(3, 9)).astype(np.int32)
    # Two examples packed into row 2 (segments 1 and 2), as the packed trainer feeds them.
    segments = np.ones((3, 12), np.int32), np.ones((3, 9), np.int32)
    segments[0][1, 7:] = 0
    segments[0][2, 6:], segments[1][2, 4:] = 2, 2
    return encoder, decoder, segments


def test_same_logits_and_gradients_padded_and_packed(model_and_params):
    config, params = model_and_params
    encoder, decoder, (encoder_segments, decoder_segments) = _tokens(config)

    def loss_and_grads(impl, packed):
        model = family.model_for(dataclasses.replace(config, attention_impl=impl))
        extra = dict(encoder_segment_ids=encoder_segments, decoder_segment_ids=decoder_segments) if packed else {}

        def loss(p):
            logits = model.apply({"params": p}, encoder, decoder, **extra)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 5]), logits

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    for packed in (False, True):
        (loss, logits), grads = loss_and_grads("einsum", packed)
        (jax_loss, jax_logits), jax_grads = loss_and_grads("jax", packed)
        np.testing.assert_allclose(jax_logits, logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(jax_loss, loss, rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), jax_grads, grads)


def test_same_decoded_tokens(model_and_params):
    config, params = model_and_params
    encoder, _, _ = _tokens(config)
    for decode in (
        functools.partial(greedy_decode, max_decode_length=10),
        functools.partial(beam_search, max_decode_length=10, num_beams=3),
    ):
        outs = [
            jax.jit(functools.partial(decode, family.model_for(dataclasses.replace(config, attention_impl=impl))))(
                params, encoder
            )
            for impl in ("einsum", "jax")
        ]
        jax.tree.map(np.testing.assert_array_equal, *(jax.tree.leaves(o)[0] for o in outs))


def test_an_unknown_attention_impl_is_refused():
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        family.preset_config("tiny", attention_impl="flash")
