"""Flax (linen) BART encoder-decoder, numerically identical to transformers' BartForConditionalGeneration.

Design notes:
  * Architecture follows HF BART: token embedding (optionally scaled by sqrt(d_model)) plus a
    learned position embedding looked up at ``position + 2`` (fairseq's offset, kept so HF tables
    import as they are), ``layernorm_embedding``, post-LN residual blocks, scaled dot-product
    attention and an MLP, every projection with a bias; float32 logits from the head tied to the
    shared embedding plus ``final_logits_bias``.
  * The public surface is ``T5Transformer``'s: ``encode``/``decode``/``__call__`` with the same
    arguments, segment ids (0 = padding) and in-segment positions for packed rows, the decode
    cache in the ``"cache"`` collection, ``scan_layers`` and ``remat``. Decode-cache module names
    match T5's (``self_attention``, ``encoder_decoder_attention``), so ``decoding.py`` reorders beams
    the same way.
  * Every parameter carries logical axis names; LoRA adapters sit inside the projection they adapt
    (q, k, v, o, wi = fc1, wo = fc2, lm_head when untied), so ``lora.py`` works unchanged.

Parameter tree: ``token_embedder/embedding``; ``encoder/{position_embedder, embedding_norm,
layers_<i>/{attention, attention_norm, mlp, mlp_norm}}``; ``decoder/{position_embedder,
embedding_norm, layers_<i>/{self_attention, self_attention_norm, encoder_decoder_attention,
encoder_decoder_attention_norm, mlp, mlp_norm}, logits_bias}`` plus ``decoder/logits_dense`` for an
untied head. Attention projections are ``query``/``key``/``value``/``out`` with 3-D kernels like T5's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import stacks
from distill_jax.models.attention import HEAD_AXES, CachedAttention, causal_mask, mask_bias, step_mask
from distill_jax.models.bart_config import BartConfig
from distill_jax.models.encoder_decoder import EncoderDecoder
from distill_jax.models.layers import ACTIVATIONS, Dense, compute_dtypes, constrain, lm_logits, normal_init
from distill_jax.models.stacks import Sublayer

Array = jax.Array
# fairseq reserved the first two rows of the position table; HF keeps them, so position p reads row p + 2.
POSITION_OFFSET = 2


def _dense(
    cfg: BartConfig,
    inputs: tuple[tuple[int, ...], tuple[str, ...]],
    outputs: tuple[tuple[int, ...], tuple[str, ...]],
    lora_target: str,
    name: str,
) -> Dense:
    """A BART projection: biased, initialised with ``init_std``."""
    return Dense(cfg, *inputs, *outputs, cfg.init_std, lora_target, use_bias=True, name=name)


def _layer_norm(cfg: BartConfig, name: str) -> nn.LayerNorm:
    """torch's LayerNorm: statistics in float32 from the centred values (not E[x^2] - E[x]^2)."""
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_epsilon,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
        **compute_dtypes(cfg),
    )


class Attention(CachedAttention):
    """BART attention (scaled dot product, biased projections); the flow and decode cache are ``CachedAttention``'s."""

    config: BartConfig
    num_heads: int
    cross_attention: bool = False

    def _heads(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        return (self.num_heads, self.config.d_model // self.num_heads), ("heads", "kv")

    def _project(self, name: str, x: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        y = _dense(cfg, ((cfg.d_model,), ("embed",)), self._heads(), name[0], name)(x, enable_dropout)
        return constrain(y, HEAD_AXES)

    def _query(self, inputs_q: Array, enable_dropout: bool) -> Array:
        return self._project("query", inputs_q, enable_dropout)

    def _keys_values(self, inputs_kv: Array, enable_dropout: bool = False) -> tuple[Array, Array]:
        return self._project("key", inputs_kv, enable_dropout), self._project("value", inputs_kv, enable_dropout)

    def _output(self, out: Array, enable_dropout: bool) -> Array:
        return _dense(self.config, self._heads(), ((self.config.d_model,), ("embed",)), "o", "out")(out, enable_dropout)

    def _scale(self) -> float:
        return (self.config.d_model // self.num_heads) ** -0.5

    def _dropout_rate(self) -> float:
        return self.config.attention_dropout


class Mlp(nn.Module):
    """``fc2(dropout(act(fc1 x)))``; fc1/fc2 are LoRA targets ``wi``/``wo`` as in T5."""

    config: BartConfig
    ffn_dim: int

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        d, f = ((cfg.d_model,), ("embed",)), ((self.ffn_dim,), ("mlp",))
        h = ACTIVATIONS[cfg.activation_function](_dense(cfg, d, f, "wi", "wi")(x, enable_dropout))
        h = constrain(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.activation_dropout)(h, deterministic=not enable_dropout)
        return _dense(cfg, f, d, "wo", "wo")(h, enable_dropout)


class _Sublayers:
    """BART's layer parts (mixed into both layers): post-LN residual sublayers, ``Attention`` with
    ``_shape()[0]`` heads, an ``Mlp`` of ``_shape()[1]`` features."""

    def _shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def _attention(self, name: str, cross_attention: bool = False) -> nn.Module:
        return Attention(self.config, self._shape()[0], cross_attention=cross_attention, name=name)

    def _mlp(self) -> nn.Module:
        return Mlp(self.config, self._shape()[1], name="mlp")

    def _sublayer(self, norm: str, x: Array, sublayer: Sublayer, enable_dropout: bool) -> Array:
        """``norm(x + dropout(sublayer(x)))``, how every BART sublayer output rejoins the stream."""
        y = sublayer(x)
        y = nn.Dropout(self.config.dropout_rate)(y, deterministic=not enable_dropout)
        return constrain(_layer_norm(self.config, norm)(x + y), ("batch", "length", "embed"))


class EncoderLayer(_Sublayers, stacks.EncoderLayer):
    """Self-attention then MLP, each post-normed (HF ``BartEncoderLayer``)."""

    config: BartConfig
    norms = ("attention_norm", "mlp_norm")

    def _shape(self) -> tuple[int, int]:
        return self.config.encoder_attention_heads, self.config.encoder_ffn_dim


class DecoderLayer(_Sublayers, stacks.DecoderLayer):
    """Causal self-attention, cross-attention, MLP, each post-normed (HF ``BartDecoderLayer``)."""

    config: BartConfig
    norms = ("self_attention_norm", "encoder_decoder_attention_norm", "mlp_norm")

    def _shape(self) -> tuple[int, int]:
        return self.config.decoder_attention_heads, self.config.decoder_ffn_dim


def _check_length(cfg: BartConfig, length: int, what: str) -> None:
    # Beyond the table a gather would silently read NaNs (JAX fills out-of-bounds rows).
    if length > cfg.max_position_embeddings:
        raise ValueError(f"{what} of length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}")


class _Embed:
    """How both BART stacks start (mixed into both): scaled token embedding + learned position embedding,
    ``layernorm_embedding``, dropout; the position table and the norm are the stack's ``position_embedder``
    and ``embedding_norm``. BART has no final norm."""

    def _embed(self, tokens: Array, positions: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        position_table = nn.Embed(
            num_embeddings=cfg.max_position_embeddings + POSITION_OFFSET,
            features=cfg.d_model,
            embedding_init=normal_init(cfg.init_std, ("positions", "embed")),
            name="position_embedder",
            **compute_dtypes(cfg),
        )
        x = self.shared_embedding(tokens.astype(jnp.int32)) * cfg.embed_scale
        x = x + position_table(positions + POSITION_OFFSET)
        x = _layer_norm(cfg, "embedding_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        return constrain(x, ("batch", "length", "embed"))


class Encoder(_Embed, stacks.EncoderStack):
    """Encoder stack: embeddings, post-LN layers."""

    config: BartConfig
    layer_cls = EncoderLayer

    def _biases(self, positions: Array, mask: Array) -> tuple[Array]:
        _check_length(self.config, positions.shape[1], "encoder input")
        return (mask_bias(mask),)


class Decoder(_Embed, stacks.DecoderStack):
    """Decoder stack plus LM head (tied or not) and ``final_logits_bias``."""

    config: BartConfig
    layer_cls = DecoderLayer

    def _step_biases(self, cache_index: Array, max_decode_length: int) -> tuple[Array]:
        _check_length(self.config, max_decode_length, "decoding")
        return (mask_bias(step_mask(cache_index, max_decode_length)),)

    def _full_biases(self, length: int, segment_ids: Array | None, positions: Array) -> tuple[Array]:
        _check_length(self.config, length, "decoder input")
        return (mask_bias(causal_mask(length, segment_ids)),)

    def _logits(self, x: Array, enable_dropout: bool) -> Array:
        """LM head in the compute dtype with float32 accumulation, plus ``final_logits_bias``, float32 out."""
        cfg = self.config
        logits = lm_logits(cfg, self.shared_embedding, x, cfg.init_std, enable_dropout)
        bias = self.param(
            "logits_bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (cfg.vocab_size,),
            compute_dtypes(cfg)["param_dtype"],
        )
        return constrain(logits.astype(jnp.float32) + bias.astype(jnp.float32), ("batch", "length", "vocab"))


class BartTransformer(EncoderDecoder):
    """BART encoder-decoder returning float32 logits; the same interface as ``T5Transformer``.

    Without segment ids, encoder padding is ``tokens == pad_token_id`` and the decoder uses a plain
    causal mask (as HF does when no decoder attention mask is given). With segment ids (0 = padding)
    attention stays inside each segment and ``*_positions`` restart per segment, which makes packed
    rows equivalent to separate rows.
    """

    config: BartConfig
    encoder_cls = Encoder
    decoder_cls = Decoder
