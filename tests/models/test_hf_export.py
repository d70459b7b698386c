"""Export to a transformers T5 directory: reload without weight warnings, same logits, exact inverse of import."""

import json
import logging

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers
from transformers.utils import logging as hf_logging

from distill_jax.data.tokenizers import ByteTokenizer
from distill_jax.models.encoder_decoder import shift_right
from distill_jax.models.family import init_params, save_hf
from distill_jax.models.hf_t5 import hf_state_dict_from_params, load_hf_t5, params_from_hf_state_dict
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config

SOURCES = ["The quick brown fox jumps over the lazy dog.", "Hi!", "Distillation makes small, fast students."]
TARGETS = ["Le renard brun.", "Salut !", "Des élèves petits et rapides."]
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
}
# Words in the transformers log lines that report weights it could not place or had to invent. (transformers 5
# also warns that an untied head is "NOT tied": its T5Config forces tying, and not tying is the intended result.)
WEIGHT_PROBLEMS = ("missing", "unexpected", "newly initialized", "not used", "not initialized", "mismatch")


def random_params(cfg: T5Config, seed: int = 0):
    """Random host parameters, drawn with numpy: compiling the model's init costs seconds per config on CPU."""
    shapes = nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * s.shape[0] ** -0.5).astype(s.dtype), shapes)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_quietly_checked(out_dir):
    """from_pretrained, failing on any missing/unexpected/mismatched weight (reported or logged)."""
    records = _Records()
    hf_logging.add_handler(records)
    try:
        model, info = transformers.T5ForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    finally:
        hf_logging.remove_handler(records)
    assert not any(info.values()), info
    problems = [m for m in records.messages if any(word in m.lower() for word in WEIGHT_PROBLEMS)]
    assert not problems, problems
    return model.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_export_reloads_in_transformers_with_the_same_logits(name, tmp_path):
    cfg = CONFIGS[name]
    params = random_params(cfg)
    save_hf(str(tmp_path / "hf"), cfg, params, tokenizer_dir=None)

    model = load_quietly_checked(str(tmp_path / "hf"))
    assert model.config.scale_decoder_outputs == cfg.tie_word_embeddings
    # An untied head must come back as its own weight, not as the shared embedding.
    assert (model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()) == cfg.tie_word_embeddings
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["architectures"] == ["T5ForConditionalGeneration"] and saved["torch_dtype"] == "float32"
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation == {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert list(tokenizer("Hi!").input_ids) == ByteTokenizer().encode("Hi!").tolist()
    inputs = tokenizer(SOURCES, padding=True, return_tensors="pt")
    labels = tokenizer(TARGETS, padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, labels=labels).logits
    logits = jax.jit(T5Transformer(cfg).apply)(
        {"params": params}, inputs.input_ids.numpy(), shift_right(labels.numpy(), cfg.decoder_start_token_id)
    )
    np.testing.assert_allclose(np.asarray(logits), expected.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_state_dict_is_the_exact_inverse_of_import(param_dtype, tmp_path):
    cfg = T5Config(**BASE | dict(num_heads=3, d_kv=24, num_decoder_layers=1, param_dtype=param_dtype))
    params = random_params(cfg, seed=3)
    state = hf_state_dict_from_params(params, cfg)
    assert "lm_head.weight" in state and "encoder.embed_tokens.weight" not in state
    assert state["encoder.block.0.layer.0.SelfAttention.o.weight"].shape == (64, 72)
    jax.tree.map(np.testing.assert_array_equal, params_from_hf_state_dict(state, cfg), params)

    save_hf(str(tmp_path / "hf"), cfg, params, tokenizer_dir=None)
    loaded_cfg, loaded = load_hf_t5(str(tmp_path / "hf"), param_dtype=param_dtype, dtype=cfg.dtype)
    assert loaded_cfg == cfg
    assert jax.tree.leaves(loaded)[0].dtype == np.dtype(jax.numpy.dtype(param_dtype))
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_copies_an_hf_tokenizer_and_replaces_only_with_overwrite(tmp_path):
    cfg = CONFIGS["v1.0-relu-tied"]
    tokenizer_dir = tmp_path / "tok"
    transformers.ByT5Tokenizer().save_pretrained(str(tokenizer_dir))
    (tokenizer_dir / "model.safetensors").write_bytes(b"not a tokenizer file")
    out = tmp_path / "hf"
    save_hf(str(out), cfg, random_params(cfg), tokenizer_dir=str(tokenizer_dir))
    assert sorted(p.name for p in out.iterdir()) == [
        "added_tokens.json",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer_config.json",
    ]
    assert (out / "model.safetensors").read_bytes() != b"not a tokenizer file"

    with pytest.raises(FileExistsError, match="overwrite"):
        save_hf(str(out), cfg, random_params(cfg), tokenizer_dir=None)
    save_hf(str(out), cfg, random_params(cfg, seed=1), tokenizer_dir=None, overwrite=True)
    _, reloaded = load_hf_t5(str(out), dropout_rate=0.0)
    jax.tree.map(np.testing.assert_array_equal, reloaded, random_params(cfg, seed=1))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # No temporary leftovers.


def test_export_names_missing_and_misshaped_parameters(tmp_path):
    cfg = CONFIGS["v1.1-gated-gelu-untied"]
    params = random_params(cfg)
    del params["decoder"]["logits_dense"]
    params["encoder"]["layers_0"]["mlp"]["wo"]["kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError) as error:
        save_hf(str(tmp_path / "hf"), cfg, params, tokenizer_dir=None)
    assert "missing parameter decoder/logits_dense/kernel" in str(error.value)
    assert "parameter encoder/layers_0/mlp/wo/kernel has shape (3, 3), expected (96, 64)" in str(error.value)
    assert not (tmp_path / "hf").exists()


def test_mt5_imports_unscaled_and_exports_as_the_same_t5(tmp_path):
    """transformers' mT5 ties its config but never scales the decoder output: an untied head here."""
    torch.manual_seed(0)
    hf_config = transformers.MT5Config(
        **{k: v for k, v in BASE.items() if k not in ("num_encoder_layers", "num_decoder_layers")},
        num_layers=2,
        num_decoder_layers=1,
        decoder_start_token_id=0,
    )
    mt5 = transformers.MT5ForConditionalGeneration(hf_config).eval()
    mt5.save_pretrained(str(tmp_path / "mt5"))
    cfg, params = load_hf_t5(str(tmp_path / "mt5"))
    assert not cfg.tie_word_embeddings

    save_hf(str(tmp_path / "hf"), cfg, params, tokenizer_dir=None)
    exported = load_quietly_checked(str(tmp_path / "hf"))
    ids = torch.tensor([[40, 41, 42, 1], [50, 51, 1, 0]])
    labels = torch.tensor([[60, 61, 1], [70, 1, 0]])
    with torch.no_grad():
        expected = mt5(input_ids=ids, attention_mask=ids != 0, labels=labels).logits.numpy()
        reloaded = exported(input_ids=ids, attention_mask=ids != 0, labels=labels).logits.numpy()
    logits = jax.jit(T5Transformer(cfg).apply)({"params": params}, ids.numpy(), shift_right(labels.numpy(), 0))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(reloaded, expected, atol=1e-4, rtol=1e-4)
