"""Structure, sizing, packing, precision and rematerialisation of the Flax T5 student."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from jax.sharding import PartitionSpec

from distill_jax.models.encoder_decoder import shift_right
from distill_jax.models.family import init_params
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import SIZES, T5Config, flops_per_token, get_config, num_params

LOGICAL_AXES = {"vocab", "embed", "heads", "kv", "mlp", "relpos_buckets"}
# Parameter counts of the public checkpoints (google/flan-t5-* share the t5-v1_1 shapes).
PUBLISHED_COUNTS = {
    "small": 76_961_152,
    "base": 247_577_856,
    "large": 783_150_080,
    "xl": 2_849_757_184,
    "t5-small-v1.0": 60_506_624,
}


def _abstract_params(cfg: T5Config):
    return jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))


def _hf_param_count(cfg: T5Config) -> int:
    with torch.device("meta"):
        model = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf_dict()))
    if not cfg.tie_word_embeddings:
        # transformers >= 5 always builds lm_head tied to shared.weight and unties it when a
        # checkpoint holds a different lm_head (as every v1.1/Flan checkpoint does).
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_param_count_matches_analytic_and_published(name):
    cfg = get_config(name)
    leaves = jax.tree_util.tree_leaves(nn.meta.unbox(_abstract_params(cfg)))
    assert sum(leaf.size for leaf in leaves) == num_params(cfg)
    if name in PUBLISHED_COUNTS:
        assert num_params(cfg) == PUBLISHED_COUNTS[name]


@pytest.mark.parametrize("name", ["tiny", "small", "t5-small-v1.0"])
def test_param_count_matches_transformers(name):
    cfg = get_config(name)
    assert _hf_param_count(cfg) == num_params(cfg)


def test_hf_dict_roundtrip():
    for cfg in SIZES.values():
        assert T5Config.from_hf_dict(cfg.to_hf_dict()) == cfg
        hf = transformers.T5Config(**cfg.to_hf_dict())
        assert T5Config.from_hf_dict(hf.to_dict()) == cfg


def test_get_config_overrides_and_validation():
    assert get_config("tiny", dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="unknown T5 size"):
        get_config("huge")
    with pytest.raises(ValueError, match="feed_forward_proj"):
        get_config("tiny", feed_forward_proj="gated-tanh")
    with pytest.raises(ValueError, match="remat"):
        get_config("tiny", remat="some")


def test_flops_per_token_is_dominated_by_6n():
    cfg = get_config("base")
    non_embedding = num_params(cfg) - 2 * cfg.vocab_size * cfg.d_model
    flops = flops_per_token(cfg, input_len=128, target_len=128)
    # Equal lengths: ~6 FLOPs per weight per token, plus the LM head and attention scores.
    assert 6 * non_embedding < flops < 6 * (non_embedding + cfg.vocab_size * cfg.d_model) * 1.2


@pytest.mark.parametrize("name", ["tiny", "t5-small-v1.0"])
def test_every_parameter_has_logical_axis_names(name):
    params = _abstract_params(get_config(name))
    boxed = jax.tree_util.tree_leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(leaf, nn.Partitioned) for leaf in boxed)
    specs = jax.tree_util.tree_leaves(nn.get_partition_spec(params), is_leaf=lambda x: isinstance(x, PartitionSpec))
    shapes = jax.tree_util.tree_leaves(nn.meta.unbox(params))
    assert len(specs) == len(shapes)
    for spec, shape in zip(specs, shapes):
        assert isinstance(spec, PartitionSpec) and len(spec) == len(shape.shape)
        assert set(spec) <= LOGICAL_AXES


def test_param_tree_layout():
    params = nn.meta.unbox(_abstract_params(get_config("tiny")))
    assert set(params) == {"token_embedder", "encoder", "decoder"}
    assert params["decoder"]["logits_dense"]["kernel"].shape == (128, 384)
    tied = nn.meta.unbox(_abstract_params(get_config("tiny", tie_word_embeddings=True)))
    assert "logits_dense" not in tied["decoder"]


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("tiny", dropout_rate=0.0)
    return cfg, nn.meta.unbox(init_params(cfg, jax.random.PRNGKey(0)))


def _forward(cfg: T5Config, params, *args, **kwargs):
    """Jitted teacher-forced forward (eager Flax dispatch is slow on CPU)."""
    return jax.jit(T5Transformer(cfg).apply, static_argnames=("enable_dropout",))({"params": params}, *args, **kwargs)


def _tokens(rng, shape, vocab=384):
    return jnp.asarray(np.random.default_rng(rng).integers(3, vocab, size=shape), jnp.int32)


def test_forward_shapes_and_dtypes(tiny):
    cfg, params = tiny
    apply = jax.jit(T5Transformer(cfg).apply, static_argnames="method")
    enc, dec = _tokens(0, (3, 7)), _tokens(1, (3, 5))
    logits = apply({"params": params}, enc, dec)
    assert logits.shape == (3, 5, cfg.vocab_size) and logits.dtype == jnp.float32
    encoded = apply({"params": params}, enc, method=T5Transformer.encode)
    assert encoded.shape == (3, 7, cfg.d_model) and encoded.dtype == jnp.float32
    np.testing.assert_allclose(
        apply({"params": params}, encoded, enc, dec, method=T5Transformer.decode), logits, atol=1e-6
    )


def test_shift_right_restarts_each_segment():
    targets = jnp.array([[5, 6, 7, 8, 9, 0]])
    segments = jnp.array([[1, 1, 1, 2, 2, 0]])
    np.testing.assert_array_equal(shift_right(targets), [[0, 5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(shift_right(targets, 3, segments), [[3, 5, 6, 3, 8, 3]])


@pytest.mark.parametrize("with_positions", [True, False])
def test_packed_row_matches_separate_rows(tiny, with_positions):
    cfg, params = tiny
    apply = jax.jit(lambda *a, **k: T5Transformer(cfg).apply({"params": params}, *a, **k))
    lengths = [(5, 4), (3, 6)]  # (input, target) of each example
    inputs = [_tokens(10 + i, (1, s)) for i, (s, _) in enumerate(lengths)]
    targets = [_tokens(20 + i, (1, t)) for i, (_, t) in enumerate(lengths)]
    separate = [apply(x, shift_right(y)) for x, y in zip(inputs, targets)]

    def pack(parts, total):
        tokens = jnp.concatenate(parts, axis=1)
        segments = jnp.concatenate([jnp.full(p.shape, i + 1) for i, p in enumerate(parts)], axis=1)
        positions = jnp.concatenate([jnp.arange(p.shape[1])[None] for p in parts], axis=1)
        pad = total - tokens.shape[1]
        return [jnp.pad(a, ((0, 0), (0, pad))) for a in (tokens, segments, positions)]

    enc, enc_seg, enc_pos = pack(inputs, 10)
    tgt, dec_seg, dec_pos = pack(targets, 12)
    logits = apply(
        enc,
        shift_right(tgt, cfg.decoder_start_token_id, dec_seg),
        encoder_segment_ids=enc_seg,
        decoder_segment_ids=dec_seg,
        encoder_positions=enc_pos if with_positions else None,
        decoder_positions=dec_pos if with_positions else None,
    )
    np.testing.assert_allclose(logits[:, :4], separate[0], atol=1e-5)
    np.testing.assert_allclose(logits[:, 4:10], separate[1], atol=1e-5)


def test_padding_does_not_change_logits(tiny):
    cfg, params = tiny
    enc, dec = _tokens(3, (1, 6)), _tokens(4, (1, 4))
    logits = _forward(cfg, params, enc, dec)
    padded = _forward(cfg, params, jnp.pad(enc, ((0, 0), (0, 3))), jnp.pad(dec, ((0, 0), (0, 2))))
    np.testing.assert_allclose(padded[:, :4], logits, atol=1e-5)


def test_bfloat16_compute_returns_float32_logits(tiny):
    cfg, params = tiny
    enc, dec = _tokens(5, (2, 9)), _tokens(6, (2, 7))
    reference = _forward(cfg, params, enc, dec)
    bf16 = dataclasses.replace(cfg, dtype="bfloat16")
    logits = _forward(bf16, params, enc, dec)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    assert np.abs(logits - reference).max() < 0.05 * np.abs(reference).max()
    bf16_params = init_params(dataclasses.replace(bf16, param_dtype="bfloat16"), jax.random.PRNGKey(0))
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree_util.tree_leaves(nn.meta.unbox(bf16_params)))


def test_dropout_is_active_only_when_enabled(tiny):
    _, params = tiny
    cfg = get_config("tiny", dropout_rate=0.3)
    enc, dec = _tokens(7, (2, 6)), _tokens(8, (2, 5))
    eval_logits = _forward(cfg, params, enc, dec)
    np.testing.assert_allclose(eval_logits, _forward(dataclasses.replace(cfg, dropout_rate=0.0), params, enc, dec))
    train_logits = _forward(cfg, params, enc, dec, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(1)})
    assert np.abs(train_logits - eval_logits).max() > 1e-3


def _loss_and_grad(cfg: T5Config, params):
    """Loss and gradients with dropout on, so rematerialisation must replay the same masks."""
    enc, dec = _tokens(9, (2, 6)), _tokens(10, (2, 5))

    def loss(p):
        logits = T5Transformer(cfg).apply(
            {"params": p}, enc, dec, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(2)}
        )
        return jnp.mean(jax.nn.log_softmax(logits)[..., 3])

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module")
def no_remat_loss_and_grad(tiny):
    return _loss_and_grad(get_config("tiny", dropout_rate=0.1), tiny[1])


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_matches_no_remat(tiny, no_remat_loss_and_grad, remat):
    value, grads = no_remat_loss_and_grad
    remat_value, remat_grads = _loss_and_grad(get_config("tiny", dropout_rate=0.1, remat=remat), tiny[1])
    np.testing.assert_allclose(remat_value, value, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), remat_grads, grads)
