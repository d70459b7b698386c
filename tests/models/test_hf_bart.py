"""transformers BART <-> Flax BART: import and export with logits parity, generate parity, LoRA merged and as PEFT."""

import dataclasses
import functools
import json
import logging

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers
from transformers.utils import logging as hf_logging

from distill_jax.models import lora
from distill_jax.models.bart import BartTransformer
from distill_jax.models.bart_config import BartConfig
from distill_jax.models.decoding import beam_search, greedy_decode
from distill_jax.models.encoder_decoder import shift_right
from distill_jax.models.family import init_params, save_hf, save_peft_adapter
from distill_jax.models.hf_bart import hf_state_dict_from_params, load_hf_bart, params_from_hf_state_dict

SOURCES = ["The quick brown fox jumps over the lazy dog.", "Hi!", "Paraphrase this sentence, please."]
TARGETS = ["A fast brown fox leaps.", "Hello!", "Please reword it."]
# ByT5's ids (pad 0, EOS 1), so its tokenizer makes ragged batches without any files.
IDS = dict(pad_token_id=0, bos_token_id=None, eos_token_id=1, decoder_start_token_id=1, dropout_rate=0.0)
CONFIGS = {
    "d48-3-heads-scaled": BartConfig(
        vocab_size=384,
        d_model=48,
        encoder_attention_heads=3,
        decoder_attention_heads=3,
        encoder_ffn_dim=80,
        decoder_ffn_dim=64,
        num_encoder_layers=1,
        num_decoder_layers=2,
        max_position_embeddings=64,
        scale_embedding=True,
        **IDS,
    ),
    "d32-untied-relu": BartConfig(
        vocab_size=384,
        d_model=32,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=48,
        num_encoder_layers=2,
        num_decoder_layers=1,
        max_position_embeddings=80,
        activation_function="relu",
        tie_word_embeddings=False,
        **IDS,
    ),
    "d40-5-heads-gelu-new": BartConfig(
        vocab_size=384,
        d_model=40,
        encoder_attention_heads=5,
        decoder_attention_heads=5,
        encoder_ffn_dim=56,
        decoder_ffn_dim=56,
        num_encoder_layers=2,
        num_decoder_layers=2,
        max_position_embeddings=64,
        activation_function="gelu_new",
        **IDS,
    ),
}
MAX_LEN = 10
# Words in transformers' log lines that report weights it could not place or had to invent.
WEIGHT_PROBLEMS = ("missing", "unexpected", "newly initialized", "not used", "not initialized", "mismatch")


def hf_model(cfg: BartConfig, seed: int = 0) -> transformers.BartForConditionalGeneration:
    """A random HF BART in eval mode whose biases, norms and final_logits_bias are not their zero/one init."""
    torch.manual_seed(seed)
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(**cfg.to_hf_dict())).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(std=0.5)
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.normal_(1.0, 0.2)
            elif name.endswith("bias"):
                param.normal_(std=0.2)
        if not cfg.tie_word_embeddings:  # transformers 5 unties every embedding: keep the stacks' on shared.
            model.model.encoder.embed_tokens.weight = model.model.shared.weight
            model.model.decoder.embed_tokens.weight = model.model.shared.weight
            model.lm_head.weight.normal_(std=cfg.d_model**-0.5)
    return model


def random_params(cfg: BartConfig, seed: int = 0):
    """Random host parameters drawn with numpy: compiling the model's init costs seconds per config on CPU."""
    shapes = nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * s.shape[0] ** -0.5).astype(s.dtype), shapes)


def _encode_and_decode(model: BartTransformer, tokens, decoder_tokens):
    encoded = model.encode(tokens)
    return encoded, model.decode(encoded, tokens, decoder_tokens)


@functools.cache
def forward(cfg: BartConfig):
    """Jitted ``(params, tokens, decoder tokens) -> (encoder output, logits)``: one compile per config."""
    return jax.jit(
        lambda params, *args: BartTransformer(cfg).apply({"params": params}, *args, method=_encode_and_decode)
    )


@functools.cache
def decoder(cfg: BartConfig, decode_fn, **settings):
    """A jitted greedy_decode/beam_search, compiled once per config and settings."""
    return jax.jit(functools.partial(decode_fn, BartTransformer(cfg), max_decode_length=MAX_LEN, **settings))


@pytest.fixture(scope="module")
def batch():
    tokenizer = transformers.ByT5Tokenizer()
    inputs = tokenizer(SOURCES, padding=True, return_tensors="pt")
    labels = tokenizer(TARGETS, padding=True, return_tensors="pt").input_ids
    return inputs, labels


def hf_outputs(model, batch):
    inputs, labels = batch
    with torch.no_grad():  # With labels, HF shifts them right with decoder_start_token_id, as shift_right does.
        return model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, labels=labels)


def assert_parity(cfg: BartConfig, params, expected, batch):
    inputs, labels = batch
    tokens = inputs.input_ids.numpy()
    encoded, logits = forward(cfg)(params, tokens, shift_right(labels.numpy(), cfg.decoder_start_token_id))
    real = inputs.attention_mask.numpy().astype(bool)  # Padded encoder positions are don't-care.
    np.testing.assert_allclose(
        np.asarray(encoded)[real], expected.encoder_last_hidden_state.numpy()[real], atol=1e-4, rtol=1e-4
    )
    np.testing.assert_allclose(np.asarray(logits), expected.logits.numpy(), atol=1e-4, rtol=1e-4)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_quietly_checked(out_dir: str) -> transformers.BartForConditionalGeneration:
    """from_pretrained, failing on any missing/unexpected/mismatched weight (reported or logged)."""
    records = _Records()
    hf_logging.add_handler(records)
    try:
        model, info = transformers.BartForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    finally:
        hf_logging.remove_handler(records)
    assert not any(info.values()), info
    problems = [m for m in records.messages if any(word in m.lower() for word in WEIGHT_PROBLEMS)]
    assert not problems, problems
    return model.eval()


@pytest.mark.parametrize(
    "name", ["d32-untied-relu", "d48-3-heads-scaled", pytest.param("d40-5-heads-gelu-new", marks=pytest.mark.slow)]
)
def test_import_export_round_trip_keeps_transformers_logits(name, batch, tmp_path):
    cfg = CONFIGS[name]
    model = hf_model(cfg)
    model.save_pretrained(str(tmp_path / "hf"))
    expected = hf_outputs(model, batch)
    loaded_cfg, params = load_hf_bart(str(tmp_path / "hf"), dropout_rate=0.0)
    assert loaded_cfg == cfg
    assert_parity(cfg, params, expected, batch)

    save_hf(str(tmp_path / "out"), cfg, params, tokenizer_dir=None)
    exported = load_quietly_checked(str(tmp_path / "out"))
    head_is_shared = exported.lm_head.weight.data_ptr() == exported.model.shared.weight.data_ptr()
    assert head_is_shared == cfg.tie_word_embeddings
    torch.testing.assert_close(hf_outputs(exported, batch).logits, expected.logits, atol=1e-5, rtol=1e-5)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["architectures"] == ["BartForConditionalGeneration"] and saved["model_type"] == "bart"
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert generation == dict(
        bos_token_id=None,
        decoder_start_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))("Hi!").input_ids == [75, 108, 36, 1]


def test_bart_model_checkpoints_sharded_and_without_head_import(batch, tmp_path):
    """facebook/bart-base is saved from BartModel: no "model." prefix, no final_logits_bias (zeros in HF)."""
    cfg = CONFIGS["d48-3-heads-scaled"]
    model = hf_model(cfg, seed=1)
    with torch.no_grad():
        model.final_logits_bias.zero_()
    model.model.save_pretrained(str(tmp_path / "base"), max_shard_size="50KB")
    assert (tmp_path / "base" / "model.safetensors.index.json").exists()
    weight_map = json.loads((tmp_path / "base" / "model.safetensors.index.json").read_text())["weight_map"]
    assert "shared.weight" in weight_map and not any(name.startswith("model.") for name in weight_map)
    loaded_cfg, params = load_hf_bart(str(tmp_path / "base"), dropout_rate=0.0)
    assert loaded_cfg == cfg
    assert_parity(cfg, params, hf_outputs(model, batch), batch)


def test_converter_names_missing_unexpected_misshaped_and_inconsistent_tensors():
    cfg = CONFIGS["d48-3-heads-scaled"]
    state = {k: v.numpy() for k, v in hf_model(cfg).state_dict().items()}
    missing = "model.decoder.layers.1.fc2.bias"
    del state[missing]
    state["model.encoder.layers.0.self_attn.q_proj.weight"] = np.zeros((3, 3), np.float32)
    state["model.encoder.layers.7.fc1.weight"] = np.zeros(3, np.float32)
    state["model.decoder.embed_tokens.weight"] = state["model.shared.weight"] + 1
    with pytest.raises(ValueError) as error:
        params_from_hf_state_dict(state, cfg)
    message = str(error.value)
    assert f"missing {missing}" in message
    assert "model.encoder.layers.0.self_attn.q_proj.weight has shape (3, 3), expected (48, 48)" in message
    assert "unexpected model.encoder.layers.7.fc1.weight" in message
    assert "model.decoder.embed_tokens.weight differs from model.shared.weight" in message


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_state_dict_is_the_exact_inverse_of_import_in_both_layouts(param_dtype, tmp_path):
    cfg = dataclasses.replace(CONFIGS["d32-untied-relu"], param_dtype=param_dtype, forced_bos_token_id=2)
    params = random_params(cfg, seed=3)
    state = hf_state_dict_from_params(params, cfg)
    assert state["final_logits_bias"].shape == (1, 384) and state["lm_head.weight"].shape == (384, 32)
    assert state["model.encoder.layers.0.self_attn.q_proj.bias"].shape == (32,)
    jax.tree.map(np.testing.assert_array_equal, params_from_hf_state_dict(state, cfg), params)

    save_hf(str(tmp_path / "hf"), cfg, params, tokenizer_dir=None)
    assert json.loads((tmp_path / "hf" / "generation_config.json").read_text())["forced_bos_token_id"] == 2
    loaded_cfg, loaded = load_hf_bart(str(tmp_path / "hf"), param_dtype=param_dtype, dropout_rate=0.0)
    assert loaded_cfg == cfg
    jax.tree.map(np.testing.assert_array_equal, loaded, params)

    scanned_cfg = dataclasses.replace(cfg, scan_layers=True)
    _, scanned = load_hf_bart(str(tmp_path / "hf"), param_dtype=param_dtype, scan_layers=True)
    assert scanned["decoder"]["layers"]["mlp"]["wi"]["kernel"].shape == (1, 32, 48)
    exported = hf_state_dict_from_params(scanned, scanned_cfg)
    assert sorted(exported) == sorted(state)
    jax.tree.map(np.testing.assert_array_equal, exported, state)


@pytest.fixture(scope="module")
def generating():
    """A random HF BART, its Flax params, a ragged batch, and an EOS id greedy emits early (so beams end)."""
    # Untied: a random tied BART mostly repeats its input token (its embedding scores itself highest).
    cfg = dataclasses.replace(CONFIGS["d48-3-heads-scaled"], tie_word_embeddings=False, init_std=0.1)
    model = hf_model(cfg, seed=1)
    params = params_from_hf_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, cfg)
    inputs = transformers.ByT5Tokenizer()(SOURCES, padding=True, return_tensors="pt")
    greedy = np.asarray(decoder(cfg, greedy_decode)(params, inputs.input_ids.numpy()))
    assert len(np.unique(greedy)) > 3, "degenerate random model"
    # A token greedy emits often, but never first: as EOS it ends rows at different, early steps.
    values, counts = np.unique(greedy[:, 1:], return_counts=True)
    counts[np.isin(values, greedy[:, 0])] = 0
    return cfg, model, params, inputs, int(values[np.argmax(counts)])


def hf_generate(model, inputs, cfg: BartConfig, **settings) -> tuple[np.ndarray, np.ndarray | None]:
    """HF generate with BART's start token and nothing forced: [B, n, MAX_LEN] tokens (pad after EOS), scores."""
    n = settings.get("num_return_sequences", 1)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=MAX_LEN,
            min_new_tokens=0,
            no_repeat_ngram_size=0,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            early_stopping=False,
            decoder_start_token_id=cfg.decoder_start_token_id,
            eos_token_id=cfg.eos_token_id,
            pad_token_id=cfg.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
            **settings,
        )
    sequences = out.sequences.numpy()[:, 1:]
    sequences = np.pad(sequences, ((0, 0), (0, MAX_LEN - sequences.shape[1])), constant_values=cfg.pad_token_id)
    for row in sequences:  # HF fills after EOS with its own value; normalise to pad.
        eos = np.flatnonzero(row == cfg.eos_token_id)
        if eos.size:
            row[eos[0] + 1 :] = cfg.pad_token_id
    scores = out.sequences_scores.numpy().reshape(-1, n) if settings.get("num_beams", 1) > 1 else None
    return sequences.reshape(-1, n, MAX_LEN), scores


@pytest.mark.parametrize("early_eos", [False, True])
def test_greedy_matches_generate(generating, early_eos):
    cfg, model, params, inputs, eos = generating
    cfg = dataclasses.replace(cfg, eos_token_id=eos) if early_eos else cfg
    expected, _ = hf_generate(model, inputs, cfg, num_beams=1)
    np.testing.assert_array_equal(decoder(cfg, greedy_decode)(params, inputs.input_ids.numpy()), expected[:, 0])


@pytest.mark.parametrize(
    "num_return_sequences,length_penalty",
    [(2, 0.6), pytest.param(1, 1.0, marks=pytest.mark.slow), pytest.param(3, 2.0, marks=pytest.mark.slow)],
)
def test_beam_search_matches_generate(generating, num_return_sequences, length_penalty):
    cfg, model, params, inputs, eos = generating
    cfg = dataclasses.replace(cfg, eos_token_id=eos)
    settings = dict(num_beams=3, num_return_sequences=num_return_sequences, length_penalty=length_penalty)
    tokens, scores = decoder(cfg, beam_search, **settings)(params, inputs.input_ids.numpy())
    expected_tokens, expected_scores = hf_generate(model, inputs, cfg, **settings)
    np.testing.assert_array_equal(tokens, expected_tokens)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4, rtol=0)
    if length_penalty <= 1.0:  # A large penalty rightly prefers the long hypotheses.
        assert np.any(np.asarray(tokens)[..., -1] == cfg.pad_token_id), "no hypothesis ended early"


LORA = dataclasses.replace(
    CONFIGS["d32-untied-relu"], lora_rank=4, lora_alpha=8.0, lora_targets=("q", "k", "v", "o", "wi", "wo", "lm_head")
)


def test_lora_exports_merged_and_as_a_peft_adapter_on_the_base(batch, tmp_path):
    peft = pytest.importorskip("peft")
    params = random_params(LORA, seed=5)  # Adapters as if trained: B is not zero.
    inputs, labels = batch
    _, ours = forward(LORA)(params, inputs.input_ids.numpy(), shift_right(labels.numpy(), 1))
    base_cfg = dataclasses.replace(LORA, lora_rank=0)

    save_hf(str(tmp_path / "merged"), base_cfg, lora.merge_lora(params, LORA), tokenizer_dir=None)
    merged = load_quietly_checked(str(tmp_path / "merged"))
    np.testing.assert_allclose(hf_outputs(merged, batch).logits.numpy(), np.asarray(ours), atol=1e-4, rtol=1e-4)

    base_dir, adapter_dir = str(tmp_path / "base"), str(tmp_path / "base" / "lora_adapter")
    save_hf(base_dir, base_cfg, lora.strip_adapters(params), tokenizer_dir=None)
    save_peft_adapter(adapter_dir, LORA, params, base_dir)
    adapter_config = json.loads((tmp_path / "base" / "lora_adapter" / "adapter_config.json").read_text())
    assert adapter_config["target_modules"] == ["fc1", "fc2", "k_proj", "lm_head", "out_proj", "q_proj", "v_proj"]
    model = peft.PeftModel.from_pretrained(load_quietly_checked(base_dir), adapter_dir).eval()
    np.testing.assert_allclose(hf_outputs(model, batch).logits.numpy(), np.asarray(ours), atol=1e-4, rtol=1e-4)
