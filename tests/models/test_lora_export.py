"""LoRA students leave for transformers merged, or as a base model plus a PEFT adapter: same logits."""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

from distill_jax.models import lora
from distill_jax.models.encoder_decoder import shift_right
from distill_jax.models.family import init_params, save_hf, save_peft_adapter
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import get_config

BASE = get_config("tiny", dropout_rate=0.0, d_model=64, d_ff=128, d_kv=16)
LORA = dataclasses.replace(BASE, lora_rank=4, lora_alpha=8.0, lora_targets=("q", "v", "o", "wi", "wo", "lm_head"))
SOURCES = ["The cat sat on the mat.", "Distillation makes students fast."]
TARGETS = ["A cat was sitting.", "Small models are quick."]


def trained_lora_params():
    params = jax.tree.map(np.asarray, nn.unbox(init_params(LORA, jax.random.key(0))))
    rng = np.random.default_rng(1)  # A trained adapter: B is no longer zero.
    return jax.tree_util.tree_map_with_path(
        lambda path, x: rng.normal(size=x.shape).astype(np.float32) * 0.05 if path[-1].key == "lora_b" else x, params
    )


def reference_and_hf_logits(params, model):
    tokenizer = transformers.ByT5Tokenizer()
    inputs = tokenizer(SOURCES, padding=True, return_tensors="pt")
    labels = tokenizer(TARGETS, padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        hf = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, labels=labels).logits.numpy()
    ours = T5Transformer(LORA).apply(
        {"params": params}, inputs.input_ids.numpy(), shift_right(labels.numpy(), LORA.decoder_start_token_id)
    )
    return np.asarray(ours), hf


def test_merged_export_matches_the_lora_model(tmp_path):
    params = trained_lora_params()
    save_hf(str(tmp_path / "merged"), BASE, lora.merge_lora(params, LORA), tokenizer_dir=None)
    model = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "merged")).eval()
    ours, hf = reference_and_hf_logits(params, model)
    np.testing.assert_allclose(ours, hf, atol=1e-4, rtol=1e-4)


def test_peft_adapter_on_the_base_model_matches_the_lora_model(tmp_path):
    peft = pytest.importorskip("peft")
    params = trained_lora_params()
    base_dir, adapter_dir = str(tmp_path / "base"), str(tmp_path / "base" / "lora_adapter")
    save_hf(base_dir, BASE, lora.strip_adapters(params), tokenizer_dir=None)
    save_peft_adapter(adapter_dir, LORA, params, base_dir)
    base = transformers.T5ForConditionalGeneration.from_pretrained(base_dir)
    model = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    ours, hf = reference_and_hf_logits(params, model)
    np.testing.assert_allclose(ours, hf, atol=1e-4, rtol=1e-4)
