"""Structure, sizing, caching, packing, scanning and LoRA of the Flax BART student, and the family dispatch."""

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from jax.sharding import PartitionSpec

from distill_jax.config import DEFAULT_LOGICAL_AXIS_RULES
from distill_jax.models import family, lora
from distill_jax.models.bart import BartTransformer
from distill_jax.models.bart_config import SIZES, BartConfig, flops_per_token, get_config, num_params
from distill_jax.models.encoder_decoder import shift_right, stack_layers
from distill_jax.models.family import init_params
from distill_jax.models.t5_config import T5Config

# Unequal stacks, heads and FFN widths, so no encoder/decoder mix-up goes unnoticed.
SMALL = BartConfig(
    vocab_size=384,
    d_model=32,
    encoder_attention_heads=4,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=48,
    num_encoder_layers=1,
    num_decoder_layers=2,
    max_position_embeddings=40,
    scale_embedding=True,
    dropout_rate=0.0,
    pad_token_id=0,
    bos_token_id=None,
    eos_token_id=1,
    decoder_start_token_id=1,
    # LORA's settings, so that LORA without adapters is SMALL and shares its compiled forward pass.
    lora_alpha=8.0,
    lora_targets=("q", "k", "v", "o", "wi", "wo"),
)
LORA = dataclasses.replace(SMALL, lora_rank=4)
UNTIED = dataclasses.replace(SMALL, tie_word_embeddings=False)
# facebook/bart-base's published size; transformers counts final_logits_bias as a buffer, not a parameter.
BART_BASE_PARAMETERS = 139_420_416


def abstract_params(cfg: BartConfig):
    return jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))


def random_params(cfg: BartConfig, seed: int = 0):
    """Random host parameters with non-zero biases and norms, drawn with numpy (no init compile)."""
    shapes = nn.meta.unbox(abstract_params(cfg))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * s.shape[0] ** -0.5).astype(s.dtype), shapes)


@functools.cache
def jitted(cfg: BartConfig, method: str = "__call__", **static):
    """One compiled function per config, method and static arguments: CPU compiles dominate these tests."""
    return jax.jit(functools.partial(BartTransformer(cfg).apply, method=method, **static))


def forward(cfg: BartConfig, params, *args, **kwargs):
    return jitted(cfg)({"params": params}, *args, **kwargs)


def ragged_batch(cfg: BartConfig, lengths=(12, 7, 4), target_len=9, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, cfg.vocab_size, size=(len(lengths), max(lengths))).astype(np.int32)
    for row, length in enumerate(lengths):
        tokens[row, length:] = cfg.pad_token_id
    targets = rng.integers(3, cfg.vocab_size, size=(len(lengths), target_len)).astype(np.int32)
    return jnp.asarray(tokens), jnp.asarray(targets)


def hf_parameter_count(cfg: BartConfig) -> int:
    with torch.device("meta"):
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(**cfg.to_hf_dict()))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_param_count_matches_analytic_transformers_and_published(name):
    cfg = get_config(name)
    assert sum(leaf.size for leaf in jax.tree.leaves(nn.meta.unbox(abstract_params(cfg)))) == num_params(cfg)
    assert hf_parameter_count(cfg) + cfg.vocab_size == num_params(cfg)
    if name == "bart-base":
        assert num_params(cfg) == BART_BASE_PARAMETERS + cfg.vocab_size


def test_tree_layout_and_untied_head():
    params = nn.meta.unbox(abstract_params(UNTIED))
    assert set(params) == {"token_embedder", "encoder", "decoder"}
    assert params["decoder"]["logits_dense"]["kernel"].shape == (32, 384)
    assert params["encoder"]["position_embedder"]["embedding"].shape == (42, 32)
    assert params["encoder"]["layers_0"]["attention"]["query"]["kernel"].shape == (32, 4, 8)
    assert params["decoder"]["layers_0"]["self_attention"]["out"]["kernel"].shape == (2, 16, 32)
    assert "logits_dense" not in nn.meta.unbox(abstract_params(SMALL))["decoder"]
    assert num_params(UNTIED) == num_params(SMALL) + 384 * 32


def test_hf_dict_roundtrip():
    for cfg in [*SIZES.values(), SMALL, UNTIED, LORA]:
        assert BartConfig.from_hf_dict(cfg.to_hf_dict(), **_lora_fields(cfg)) == cfg
        hf = transformers.BartConfig(**cfg.to_hf_dict())
        assert BartConfig.from_hf_dict(hf.to_dict(), **_lora_fields(cfg)) == cfg


def _lora_fields(cfg: BartConfig) -> dict:
    return {k: getattr(cfg, k) for k in ("lora_rank", "lora_alpha", "lora_targets")}


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="not divisible by decoder_attention_heads=5"):
        dataclasses.replace(SMALL, decoder_attention_heads=5)
    with pytest.raises(ValueError, match="activation_function"):
        dataclasses.replace(SMALL, activation_function="tanh")
    with pytest.raises(ValueError, match="lm_head needs an untied head"):
        dataclasses.replace(LORA, lora_targets=("q", "lm_head"))
    with pytest.raises(ValueError, match="always uses 1e-05"):
        dataclasses.replace(SMALL, layer_norm_epsilon=1e-6).to_hf_dict()
    with pytest.raises(ValueError, match="unknown model size 'bart-huge'"):
        family.preset_config("bart-huge")
    # A random-init BART student takes the tokenizer's ids and, by BART's convention, starts from EOS.
    cfg = family.preset_config("bart-base", vocab_size=384, pad_token_id=0, eos_token_id=1)
    assert (cfg.family, cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == ("bart", 0, 1, 1)
    assert family.preset_config("tiny").family == "t5"


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        dataclasses.replace(UNTIED, lora_rank=2, lora_targets=("o", "lm_head")),
        dataclasses.replace(LORA, scan_layers=True),
    ],
    ids=["tied", "untied-lora", "scanned-lora"],
)
def test_every_parameter_has_logical_axis_names_the_rules_know(cfg):
    params = abstract_params(cfg)
    boxed = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(leaf, nn.Partitioned) for leaf in boxed)
    specs = jax.tree.leaves(nn.get_partition_spec(params), is_leaf=lambda x: isinstance(x, PartitionSpec))
    shapes = jax.tree.leaves(nn.meta.unbox(params))
    known = {name for name, _ in DEFAULT_LOGICAL_AXIS_RULES} | {"lora_rank"}
    for spec, shape in zip(specs, shapes, strict=True):
        assert len(spec) == len(shape.shape) and set(spec) <= known


def test_flops_per_token_is_dominated_by_6n():
    cfg = get_config("bart-base")
    non_embedding = num_params(cfg) - cfg.vocab_size * cfg.d_model
    flops = flops_per_token(cfg, input_len=128, target_len=128)
    assert 6 * non_embedding * 0.9 < flops < 6 * (non_embedding + cfg.vocab_size * cfg.d_model) * 1.2


def cached_logits(cfg: BartConfig, params, tokens, decoder_inputs):
    """Teacher-forced logits computed one cached decode step at a time."""
    encoded = jitted(cfg, "encode")({"params": params}, tokens)
    step = jitted(cfg, "decode", decode=True, max_decode_length=decoder_inputs.shape[1], mutable=("cache",))
    # The first step creates the cache; the rest are one compiled function of (cache, tokens).
    logits, mutated = step({"params": params}, encoded, tokens, decoder_inputs[:, :1])
    steps = [logits]
    for i in range(1, decoder_inputs.shape[1]):
        logits, mutated = step({"params": params, **mutated}, encoded, tokens, decoder_inputs[:, i : i + 1])
        steps.append(logits)
    return np.concatenate(steps, axis=1)


@pytest.mark.parametrize("scan", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_cached_decode_steps_equal_teacher_forced_logits(scan):
    cfg = dataclasses.replace(SMALL, scan_layers=scan)
    params = random_params(SMALL, seed=1)
    if scan:
        params = stack_layers(params, SMALL)
    tokens, targets = ragged_batch(cfg)
    decoder_inputs = shift_right(targets, cfg.decoder_start_token_id)
    full = np.asarray(forward(cfg, params, tokens, decoder_inputs))
    assert full.dtype == np.float32 and full.shape == (3, 9, 384)
    np.testing.assert_allclose(cached_logits(cfg, params, tokens, decoder_inputs), full, atol=2e-5, rtol=2e-5)
    if scan:  # Scanned params give the per-layer model's logits.
        per_layer = np.asarray(forward(SMALL, random_params(SMALL, seed=1), tokens, decoder_inputs))
        np.testing.assert_allclose(full, per_layer, atol=2e-5, rtol=2e-5)


def test_packed_rows_equal_separate_rows():
    params = random_params(SMALL, seed=1)
    tokens, targets = ragged_batch(SMALL)
    separate = np.asarray(forward(SMALL, params, tokens, shift_right(targets, SMALL.decoder_start_token_id)))

    def pack(rows, width):
        packed = jnp.concatenate(list(rows))
        return jnp.pad(packed, (0, width - packed.shape[0]))[None]

    lengths, target_len = (12, 7, 4), targets.shape[1]
    enc = pack([row[:n] for row, n in zip(tokens, lengths)], 24)
    enc_segments = pack([jnp.full(n, i + 1) for i, n in enumerate(lengths)], 24)
    enc_positions = pack([jnp.arange(n) for n in lengths], 24)
    dec_segments = pack([jnp.full(target_len, i + 1) for i in range(3)], 28)
    dec_positions = pack([jnp.arange(target_len)] * 3, 28)
    dec = shift_right(pack(targets, 28), SMALL.decoder_start_token_id, dec_segments)
    packed = forward(
        SMALL,
        params,
        enc,
        dec,
        encoder_segment_ids=enc_segments,
        decoder_segment_ids=dec_segments,
        encoder_positions=enc_positions,
        decoder_positions=dec_positions,
    )
    np.testing.assert_allclose(np.asarray(packed)[0, :27].reshape(separate.shape), separate, atol=2e-5, rtol=2e-5)


def test_sequences_longer_than_the_position_table_are_rejected():
    tokens = jnp.ones((1, SMALL.max_position_embeddings + 1), jnp.int32)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=40"):
        jax.eval_shape(lambda: BartTransformer(SMALL).init(jax.random.PRNGKey(0), tokens, tokens[:, :4]))


def test_lora_adapters_start_neutral_merge_exactly_and_alone_train():
    params = random_params(LORA, seed=3)
    fresh = jax.tree_util.tree_map_with_path(lambda p, x: 0 * x if p[-1].key == "lora_b" else x, params)
    base = dataclasses.replace(LORA, lora_rank=0)
    tokens, targets = ragged_batch(LORA)
    decoder_inputs = shift_right(targets, LORA.decoder_start_token_id)

    def logits(cfg, p):
        return np.asarray(forward(cfg, p, tokens, decoder_inputs))

    np.testing.assert_allclose(logits(LORA, fresh), logits(base, lora.strip_adapters(fresh)), atol=1e-6, rtol=1e-6)
    merged = lora.merge_lora(params, LORA)
    np.testing.assert_allclose(logits(LORA, params), logits(base, merged), atol=1e-4, rtol=1e-4)
    assert not np.allclose(logits(LORA, params), logits(base, lora.strip_adapters(params)), atol=1e-3)

    mask = lora.trainable_mask(params)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    trainable = {jax.tree_util.keystr(path) for path, t in flat if t}
    assert trainable and all("['lora']" in path for path in trainable)
    layers, attentions = (
        LORA.num_encoder_layers + LORA.num_decoder_layers,
        LORA.num_encoder_layers + 2 * LORA.num_decoder_layers,
    )
    # lora_a and lora_b of q, k, v, o in each attention and of wi and wo in each layer.
    assert len(trainable) == 2 * (4 * attentions + 2 * layers)
    assert all(jax.tree.leaves(lora.trainable_mask(lora.strip_adapters(params))))


def test_resume_checks_compare_families_and_their_architecture_fields():
    tiny_t5 = family.preset_config("tiny")
    bart = family.preset_config("bart-tiny")
    saved_t5 = json.loads(json.dumps(dataclasses.asdict(tiny_t5)))  # A checkpoint from before BART: no family.
    assert family.architecture_changes(saved_t5, tiny_t5) == {}
    assert family.architecture_changes(saved_t5, bart)["family"] == ("t5", "bart")
    saved_bart = json.loads(json.dumps(family.config_dict(bart)))
    assert family.architecture_changes(saved_bart, dataclasses.replace(bart, dropout_rate=0.3, remat="full")) == {}
    wider = dataclasses.replace(bart, decoder_ffn_dim=512)
    assert family.architecture_changes(saved_bart, wider) == {"decoder_ffn_dim": (256, 512)}
    assert isinstance(family.model_for(tiny_t5).config, T5Config)
    assert isinstance(family.model_for(bart), BartTransformer)


def test_unsupported_hf_architecture_names_config_json_and_the_supported_types(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "umt5", "architectures": ["UMT5Model"]}))
    with pytest.raises(ValueError, match=r"config.json: unsupported architecture model_type='umt5'.*t5, mt5, bart"):
        family.hf_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bart"}))
    assert family.model_type_of(str(tmp_path)) == "bart"
