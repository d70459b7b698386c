"""model.scan_layers: the same model with stacked layer params: same logits, gradients, decoding and HF tensors."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from jax.sharding import PartitionSpec as P

from distill_jax.models.decoding import LogitFilters, beam_search, greedy_decode, sample
from distill_jax.models.encoder_decoder import stack_layers, unstack_layers
from distill_jax.models.family import init_params, save_hf
from distill_jax.models.hf_t5 import hf_state_dict_from_params, params_from_hf_state_dict, peft_state_dict_from_params
from distill_jax.models.lora import merge_lora
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import get_config
from distill_jax.training.hf_interop import export_hf, import_hf

# Three encoder and two decoder layers, so a transposed stack or a swapped layer cannot pass.
CONFIG = get_config("tiny", dropout_rate=0.0, num_encoder_layers=3, num_decoder_layers=2)
SCANNED = dataclasses.replace(CONFIG, scan_layers=True)


@pytest.fixture(scope="module")
def params():
    """(per-layer params, the same weights stacked) as host arrays."""
    per_layer = jax.tree.map(np.asarray, nn.unbox(init_params(CONFIG, jax.random.key(0))))
    return per_layer, stack_layers(per_layer, CONFIG)


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.default_rng(0)
    encoder = rng.integers(3, CONFIG.vocab_size, size=(3, 12)).astype(np.int32)
    encoder[1, 7:] = CONFIG.pad_token_id
    decoder = rng.integers(3, CONFIG.vocab_size, size=(3, 9)).astype(np.int32)
    return jnp.asarray(encoder), jnp.asarray(decoder)


def test_scanned_params_are_the_per_layer_ones_stacked_on_a_layers_axis(params):
    boxed = init_params(SCANNED, jax.random.key(0))
    assert jax.tree.structure(nn.unbox(boxed)) == jax.tree.structure(params[1])
    assert jax.tree.map(np.shape, nn.unbox(boxed)) == jax.tree.map(np.shape, params[1])
    specs = nn.get_partition_spec(boxed)
    assert specs["encoder"]["layers"]["attention"]["query"]["kernel"] == P("layers", "embed", "heads", "kv")
    assert specs["decoder"]["layers"]["mlp"]["wo"]["kernel"] == P("layers", "mlp", "embed")
    assert specs["decoder"]["relpos_bias"]["rel_embedding"] == P("relpos_buckets", "heads")  # Outside the stack.
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(params[1], CONFIG), params[0])


def test_same_logits_and_gradients(params, tokens):
    encoder, decoder = tokens

    def loss_and_grads(config, p):
        def loss(p):
            logits = T5Transformer(config).apply({"params": p}, encoder, decoder)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 5]), logits

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(p)

    (loss, logits), grads = loss_and_grads(CONFIG, params[0])
    (scan_loss, scan_logits), scan_grads = loss_and_grads(SCANNED, params[1])
    np.testing.assert_allclose(scan_logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scan_loss, loss, rtol=1e-6)
    scan_grads = unstack_layers(jax.tree.map(np.asarray, scan_grads), CONFIG)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), scan_grads, grads)


def test_kv_cache_decoding_gives_the_same_tokens(params, tokens):
    encoder, _ = tokens
    key = jax.random.key(1)

    def decode(config, p):
        model = T5Transformer(config)
        return (
            greedy_decode(model, p, encoder, max_decode_length=8),
            # Beam search reorders the self-attention cache by parent beam: axis 1 of the stacked cache.
            *beam_search(model, p, encoder, max_decode_length=8, num_beams=3),
            sample(model, p, encoder, key, max_decode_length=8, filters=LogitFilters(top_k=5), num_return_sequences=2),
        )

    greedy, beams, scores, samples = jax.jit(decode, static_argnums=0)(CONFIG, params[0])
    scan_greedy, scan_beams, scan_scores, scan_samples = jax.jit(decode, static_argnums=0)(SCANNED, params[1])
    np.testing.assert_array_equal(scan_greedy, greedy)
    np.testing.assert_array_equal(scan_beams, beams)
    np.testing.assert_allclose(scan_scores, scores, rtol=1e-5)
    np.testing.assert_array_equal(scan_samples, samples)


def test_hf_tensors_convert_both_ways_through_the_per_layer_layout(params):
    state = hf_state_dict_from_params(params[0], CONFIG)
    scanned_state = hf_state_dict_from_params(params[1], SCANNED)
    assert scanned_state.keys() == state.keys()
    jax.tree.map(np.testing.assert_array_equal, scanned_state, state)
    jax.tree.map(np.testing.assert_array_equal, params_from_hf_state_dict(state, SCANNED), params[1])


def test_lora_adapters_of_a_scanned_model_export_per_layer():
    lora = dict(lora_rank=2, lora_targets=("q", "v", "lm_head"))
    config, scanned = dataclasses.replace(CONFIG, **lora), dataclasses.replace(SCANNED, **lora)
    per_layer = jax.tree.map(np.asarray, nn.unbox(init_params(config, jax.random.key(2))))
    stacked = stack_layers(per_layer, config)
    peft = peft_state_dict_from_params(per_layer, config)
    jax.tree.map(np.testing.assert_array_equal, peft_state_dict_from_params(stacked, scanned), peft)
    with pytest.raises(ValueError, match="unstack_layers"):
        merge_lora(stacked, scanned)


def test_import_hf_into_a_scanned_run_and_export_it_back_unchanged(small_train_config, params, tmp_path):
    # A tiny-shaped HF directory over the byte vocabulary, so the demo corpus fits it.
    save_hf(str(tmp_path / "hf"), CONFIG, params[0], tokenizer_dir=None)
    cfg = small_train_config()
    cfg.model.scan_layers = True
    import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), cfg)
    export_hf(str(tmp_path / "run"), str(tmp_path / "out"))
    original = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = safetensors.numpy.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert exported.keys() == original.keys()
    jax.tree.map(np.testing.assert_array_equal, exported, original)
