"""Logits parity with transformers' PyTorch T5 through the HF -> Flax parameter converter."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from distill_jax.models.encoder_decoder import shift_right
from distill_jax.models.hf_t5 import load_hf_t5, params_from_hf_state_dict
from distill_jax.models.layers import relative_position_bucket
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config

SOURCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Distillation turns a large teacher into a small, fast student model.",
    "Hi!",
    "Relative position buckets grow logarithmically with distance, up to a maximum.",
]
TARGETS = ["Le renard brun.", "Un petit modèle rapide.", "Salut !", "Des seaux logarithmiques."]

BASE = dict(
    vocab_size=384,
    d_model=64,
    d_kv=16,
    d_ff=96,
    num_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout_rate=0.0,
)
CONFIGS = {
    "v1.1-gated-gelu-untied": T5Config(**BASE),
    "v1.0-relu-tied": T5Config(**BASE | dict(feed_forward_proj="relu", tie_word_embeddings=True)),
    "three-heads-gated-silu": T5Config(**BASE | dict(num_heads=3, d_kv=24, feed_forward_proj="gated-silu")),
    "short-buckets": T5Config(**BASE | dict(relative_attention_num_buckets=16, relative_attention_max_distance=20)),
    "unequal-layers": T5Config(**BASE | dict(num_encoder_layers=3, num_decoder_layers=1)),
}


def hf_model(cfg: T5Config, seed: int = 0) -> transformers.T5ForConditionalGeneration:
    """Random HF model in eval mode; untied configs get their own random LM head.

    transformers >= 5 builds lm_head tied to shared.weight even for v1.1 configs (it unties on
    loading a checkpoint whose lm_head differs), so untie it to make the head distinguishable.
    """
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf_dict())).eval()
    if not cfg.tie_word_embeddings:
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * cfg.d_model**-0.5)
    return model


def numpy_state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def batch():
    tokenizer = transformers.ByT5Tokenizer()
    inputs = tokenizer(SOURCES, padding=True, return_tensors="pt")
    labels = tokenizer(TARGETS, padding=True, return_tensors="pt").input_ids
    return inputs.input_ids, inputs.attention_mask, labels


def _assert_parity(cfg: T5Config, params, model, batch):
    input_ids, attention_mask, labels = batch
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    enc = jnp.asarray(input_ids.numpy())
    dec = shift_right(jnp.asarray(labels.numpy()), cfg.decoder_start_token_id)
    flax_model = T5Transformer(cfg)
    encoded = jax.jit(flax_model.apply, static_argnames="method")({"params": params}, enc, method=T5Transformer.encode)
    logits = jax.jit(flax_model.apply)({"params": params}, enc, dec)
    real = attention_mask.numpy().astype(bool)  # padded encoder positions are don't-care
    np.testing.assert_allclose(
        np.asarray(encoded)[real], expected.encoder_last_hidden_state.numpy()[real], atol=1e-4, rtol=1e-4
    )
    np.testing.assert_allclose(np.asarray(logits), expected.logits.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_transformers(name, batch):
    cfg = CONFIGS[name]
    model = hf_model(cfg)
    _assert_parity(cfg, params_from_hf_state_dict(numpy_state_dict(model), cfg), model, batch)


@pytest.mark.parametrize("name", ["v1.1-gated-gelu-untied", "v1.0-relu-tied"])
def test_load_saved_checkpoint(name, batch, tmp_path):
    cfg = CONFIGS[name]
    model = hf_model(cfg, seed=1)
    model.save_pretrained(tmp_path)
    loaded_cfg, params = load_hf_t5(str(tmp_path), dropout_rate=0.0)
    assert loaded_cfg == cfg
    _assert_parity(loaded_cfg, params, model, batch)


def test_load_sharded_checkpoint_with_implicitly_tied_head(batch, tmp_path):
    """A fresh transformers-5 v1.1 model saves its head only as shared.weight, in shards."""
    cfg = CONFIGS["v1.1-gated-gelu-untied"]
    torch.manual_seed(2)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf_dict())).eval()
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    assert (tmp_path / "model.safetensors.index.json").exists()
    loaded_cfg, params = load_hf_t5(str(tmp_path), dropout_rate=0.0)
    assert loaded_cfg == cfg
    _assert_parity(loaded_cfg, params, model, batch)


def test_converter_names_missing_unexpected_and_misshaped_tensors():
    cfg = CONFIGS["v1.1-gated-gelu-untied"]
    state = numpy_state_dict(hf_model(cfg))
    missing = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    del state[missing]
    state["encoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((3, 3), np.float32)
    state["encoder.block.7.layer.0.layer_norm.weight"] = np.zeros(64, np.float32)
    with pytest.raises(ValueError) as error:
        params_from_hf_state_dict(state, cfg)
    message = str(error.value)
    assert f"missing {missing}" in message
    assert "encoder.block.0.layer.0.SelfAttention.q.weight has shape (3, 3), expected (64, 64)" in message
    assert "unexpected encoder.block.7.layer.0.layer_norm.weight" in message


def test_converter_rejects_config_mismatch():
    state = numpy_state_dict(hf_model(CONFIGS["v1.1-gated-gelu-untied"]))
    with pytest.raises(ValueError, match="DenseReluDense.wi.weight"):
        params_from_hf_state_dict(state, CONFIGS["v1.0-relu-tied"])
    tied = dataclasses.replace(CONFIGS["v1.1-gated-gelu-untied"], tie_word_embeddings=True)
    with pytest.raises(ValueError, match="lm_head.weight differs from shared.weight"):
        params_from_hf_state_dict(state, tied)


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 20), (8, 9), (64, 300)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket_matches_transformers(num_buckets, max_distance, bidirectional):
    relative = torch.arange(-700, 701)[None, :]
    expected = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        relative, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    ours = relative_position_bucket(
        jnp.asarray(relative.numpy()), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    np.testing.assert_array_equal(np.asarray(ours), expected.numpy())
