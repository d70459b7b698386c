"""LoRA adapters: a fresh adapter changes nothing, merging is exact, names and counts are right."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.models import lora
from distill_jax.models.encoder_decoder import shift_right
from distill_jax.models.family import init_params
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import get_config

BASE = get_config("tiny", dropout_rate=0.0)
LORA = dataclasses.replace(BASE, lora_rank=4, lora_alpha=8.0, lora_targets=("q", "v", "o", "wi", "wo", "lm_head"))


def batch():
    rng = np.random.default_rng(0)
    enc = rng.integers(3, 300, size=(2, 12)).astype(np.int32)
    enc[1, 8:] = 0
    tgt = rng.integers(3, 300, size=(2, 7)).astype(np.int32)
    return enc, shift_right(tgt, 0)


@functools.cache
def _apply(config):
    return jax.jit(T5Transformer(config).apply)


def logits(config, params):
    enc, dec = batch()
    return _apply(config)({"params": params}, enc, dec)


def lora_params(seed=0, randomize_b=True):
    params = nn.unbox(init_params(LORA, jax.random.key(seed)))
    if randomize_b:  # A trained adapter: B is no longer zero.
        keys = iter(jax.random.split(jax.random.key(seed + 1), 1000))
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: jax.random.normal(next(keys), x.shape) * 0.05 if path[-1].key == "lora_b" else x, params
        )
    return params


def base_of(params):
    return lora.strip_adapters(jax.tree.map(np.asarray, params))


def test_fresh_adapters_leave_the_model_unchanged():
    params = lora_params(randomize_b=False)
    np.testing.assert_allclose(logits(LORA, params), logits(BASE, base_of(params)), rtol=1e-6, atol=1e-6)


def test_merged_adapters_give_the_same_logits_as_unmerged():
    params = lora_params()
    merged = lora.merge_lora(jax.tree.map(np.asarray, params), LORA)
    assert not any(isinstance(k, str) and k == "lora" for k in str(jax.tree_util.tree_structure(merged)).split("'"))
    np.testing.assert_allclose(logits(LORA, params), logits(BASE, merged), rtol=1e-4, atol=1e-4)
    assert not np.allclose(logits(LORA, params), logits(BASE, base_of(params)), atol=1e-3)  # Adapters mattered.


def test_adapter_counts_names_and_trainable_mask():
    boxed = jax.eval_shape(lambda k: init_params(LORA, k), jax.random.key(0))
    specs = nn.get_partition_spec(boxed)
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(boxed))[0]
    adapters = [(p, x) for p, x in flat if any(getattr(k, "key", None) == "lora" for k in p)]
    r, d, hk, ff, v = 4, BASE.d_model, BASE.num_heads * BASE.d_kv, BASE.d_ff, BASE.vocab_size
    per_enc_layer = 3 * (d * r + r * hk) + 2 * (d * r + r * ff) + (ff * r + r * d)  # q, v, o, wi_0, wi_1, wo
    per_dec_layer = 2 * 3 * (d * r + r * hk) + 2 * (d * r + r * ff) + (ff * r + r * d)
    expected = BASE.num_encoder_layers * per_enc_layer + BASE.num_decoder_layers * per_dec_layer + d * r + r * v
    assert sum(x.size for _, x in adapters) == expected
    for path, _ in adapters:
        spec = specs
        for k in path:
            spec = spec[k.key]
        assert "lora_rank" in spec
    mask = lora.trainable_mask(nn.unbox(boxed))
    assert sum(jax.tree.leaves(mask)) == len(adapters)
    assert all(
        jax.tree.leaves(
            lora.trainable_mask(nn.unbox(jax.eval_shape(lambda k: init_params(BASE, k), jax.random.key(0))))
        )
    )


def test_with_adapters_adds_only_adapter_leaves():
    params = jax.tree.map(np.asarray, lora_params())
    base = base_of(params)
    combined = lora.with_adapters(base, params)
    assert jax.tree_util.tree_structure(combined) == jax.tree_util.tree_structure(params)
    jax.tree.map(np.testing.assert_array_equal, lora.strip_adapters(combined), base)


def test_bad_lora_settings_are_rejected():
    with pytest.raises(ValueError, match="LoRA"):
        dataclasses.replace(BASE, lora_rank=2, lora_targets=("q", "attention"))
    with pytest.raises(ValueError, match="LoRA"):
        dataclasses.replace(BASE, lora_rank=-1)


def test_lora_dropout_is_active_only_when_enabled():
    config = dataclasses.replace(LORA, lora_dropout=0.5)
    params = lora_params()
    enc, dec = batch()
    with_dropout = jax.jit(
        lambda key: T5Transformer(config).apply(
            {"params": params}, enc, dec, enable_dropout=True, rngs={"dropout": key}
        )
    )
    a, b = with_dropout(jax.random.key(1)), with_dropout(jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(logits(config, params), logits(LORA, params), rtol=1e-6)
    assert jnp.isfinite(a).all()
