"""A BART student through the trainer: from a preset at random, and warm-started from a transformers BART directory."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from distill_jax.models.bart import BartTransformer
from distill_jax.models.hf_bart import load_hf_params
from distill_jax.models.lora import strip_adapters
from distill_jax.training.hf_interop import export_hf
from distill_jax.training.run_setup import setup_run
from distill_jax.training.trainer import hf_initial_state, train


def read_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [row["train/loss"] for row in map(json.loads, f) if "train/loss" in row]


@pytest.mark.slow  # ~50 s of training on 2 cores; the T5 LoRA training test covers the trainer in the fast tier.
def test_bart_tiny_trains_from_random_init(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=12, train__log_every=4, train__checkpoint_every=12, optimizer__warmup_steps=0)
    cfg.model.size = "bart-tiny"
    run = setup_run(cfg)
    assert isinstance(run.model, BartTransformer)
    model = run.model_config
    assert (model.pad_token_id, model.eos_token_id, model.decoder_start_token_id) == (0, 1, 1)  # BART starts at EOS.
    result = train(cfg, str(tmp_path))
    losses = read_losses(str(tmp_path))
    assert result.step == 12 and len(losses) == 3
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow  # A train run and an export, end to end.
def test_model_hf_dir_warm_starts_a_bart_student_and_exports_it_back(small_train_config, tmp_path):
    torch.manual_seed(0)
    hf_config = transformers.BartConfig(
        vocab_size=384,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        decoder_start_token_id=1,
        forced_eos_token_id=None,
    )
    transformers.BartForConditionalGeneration(hf_config).save_pretrained(str(tmp_path / "hf"))
    cfg = small_train_config(train__steps=2, train__log_every=1, train__checkpoint_every=2)
    cfg.model.hf_dir = str(tmp_path / "hf")
    cfg.model.lora_rank = 2
    cfg.model.lora_targets = "q,v,wi"
    run = setup_run(cfg)
    assert run.model_config.family == "bart" and run.model_config.lora_rank == 2
    state = jax.tree.map(np.asarray, hf_initial_state(run))
    imported = load_hf_params(str(tmp_path / "hf"), dataclasses.replace(run.model_config, lora_rank=0))
    jax.tree.map(np.testing.assert_array_equal, strip_adapters(state.params), imported)

    train(cfg, str(tmp_path / "run"))
    assert export_hf(str(tmp_path / "run"), str(tmp_path / "out"), lora_format="peft") == 2
    reloaded = transformers.BartForConditionalGeneration.from_pretrained(str(tmp_path / "out"))
    # LoRA trains adapters only: the exported base is the imported model, tensor for tensor.
    original = transformers.BartForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).state_dict()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0)
    assert os.path.isfile(tmp_path / "out" / "lora_adapter" / "adapter_model.safetensors")
