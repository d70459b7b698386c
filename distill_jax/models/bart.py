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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models.bart_config import BartConfig
from distill_jax.models.encoder_decoder import EncoderDecoder, maybe_remat, scan_stack
from distill_jax.models.layers import (
    ACTIVATIONS,
    attend,
    compute_dtypes,
    constrain,
    default_positions,
    key_valid,
    mask_bias,
    normal_init,
    segment_mask,
)
from distill_jax.models.lora import ADAPTER, LoraAdapter, adapts

Array = jax.Array
# fairseq reserved the first two rows of the position table; HF keeps them, so position p reads row p + 2.
POSITION_OFFSET = 2


class Dense(nn.Module):
    """``[..., *in_shape] -> [..., *out_shape]`` with named kernel axes, an optional bias and its LoRA adapter."""

    config: BartConfig
    in_shape: tuple[int, ...]
    in_names: tuple[str, ...]
    out_shape: tuple[int, ...]
    out_names: tuple[str, ...]
    lora_target: str
    use_bias: bool = True
    float32_output: bool = False  # The LM head accumulates and returns float32.

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        dtypes = compute_dtypes(cfg)
        kernel = self.param(
            "kernel",
            normal_init(cfg.init_std, self.in_names + self.out_names),
            self.in_shape + self.out_shape,
            dtypes["param_dtype"],
        )
        y = jnp.tensordot(
            x.astype(dtypes["dtype"]),
            kernel.astype(dtypes["dtype"]),
            axes=len(self.in_shape),
            preferred_element_type=jnp.float32 if self.float32_output else None,
        )
        if self.use_bias:
            bias_init = nn.with_logical_partitioning(nn.initializers.zeros, self.out_names)
            y = y + self.param("bias", bias_init, self.out_shape, dtypes["param_dtype"]).astype(y.dtype)
        if adapts(cfg, self.lora_target):
            adapter = LoraAdapter(cfg, self.in_shape, self.in_names, self.out_shape, self.out_names, name=ADAPTER)
            y = y + adapter(x, enable_dropout).astype(y.dtype)
        return y


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


class Attention(nn.Module):
    """BART attention with an optional decode-time KV cache (the same cache layout as T5's).

    With ``decode=True`` self-attention writes this step's key/value at ``cache_index`` of a cache
    preallocated to ``max_decode_length``; cross-attention projects the encoder output on the first
    step and reuses it afterwards.
    """

    config: BartConfig
    num_heads: int
    cross_attention: bool = False

    def _project(self, name: str, x: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        shape = ((cfg.d_model,), ("embed",), (self.num_heads, cfg.d_model // self.num_heads), ("heads", "kv"))
        y = Dense(cfg, *shape, lora_target=name[0], name=name)(x, enable_dropout)
        return constrain(y, ("batch", "length", "heads", "kv"))

    def _cached_cross_keys_values(self, inputs_kv: Array) -> tuple[Array, Array]:
        if self.has_variable("cache", "cached_key"):
            return self.get_variable("cache", "cached_key"), self.get_variable("cache", "cached_value")
        key, value = self._project("key", inputs_kv, False), self._project("value", inputs_kv, False)
        self.put_variable("cache", "cached_key", key)
        self.put_variable("cache", "cached_value", value)
        return key, value

    def _cached_self_keys_values(
        self, key: Array, value: Array, cache_index: Array, max_decode_length: int
    ) -> tuple[Array, Array]:
        shape = (key.shape[0], max_decode_length, *key.shape[2:])
        cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
        start = (0, cache_index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        return cached_key.value, cached_value.value

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        attention_bias: Array,
        enable_dropout: bool = False,
        decode: bool = False,
        cache_index: Array | None = None,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        query = self._project("query", inputs_q, enable_dropout)
        if decode and self.cross_attention:
            key, value = self._cached_cross_keys_values(inputs_kv)
        else:
            key, value = (
                self._project("key", inputs_kv, enable_dropout),
                self._project("value", inputs_kv, enable_dropout),
            )
            if decode:
                key, value = self._cached_self_keys_values(key, value, cache_index, max_decode_length)

        active = enable_dropout and cfg.attention_dropout
        dropout = nn.Dropout(cfg.attention_dropout, deterministic=False) if active else None
        scale = query.shape[-1] ** -0.5
        out = attend(query, key, value, (attention_bias,), scale=scale, impl=cfg.attention_impl, dropout=dropout)
        out = constrain(out, ("batch", "length", "heads", "kv"))
        shape = ((self.num_heads, cfg.d_model // self.num_heads), ("heads", "kv"), (cfg.d_model,), ("embed",))
        return Dense(cfg, *shape, lora_target="o", name="out")(out, enable_dropout)


class Mlp(nn.Module):
    """``fc2(dropout(act(fc1 x)))``; fc1/fc2 are LoRA targets ``wi``/``wo`` as in T5."""

    config: BartConfig
    ffn_dim: int

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        d, f = (cfg.d_model,), (self.ffn_dim,)
        h = ACTIVATIONS[cfg.activation_function](
            Dense(cfg, d, ("embed",), f, ("mlp",), "wi", name="wi")(x, enable_dropout)
        )
        h = constrain(h, ("batch", "length", "mlp"))
        h = nn.Dropout(cfg.activation_dropout)(h, deterministic=not enable_dropout)
        return Dense(cfg, f, ("mlp",), d, ("embed",), "wo", name="wo")(h, enable_dropout)


def _post_norm(cfg: BartConfig, name: str, x: Array, y: Array, enable_dropout: bool) -> Array:
    """``norm(x + dropout(y))``, how every BART sublayer output rejoins the stream; the norm is named ``name``."""
    y = nn.Dropout(cfg.dropout_rate)(y, deterministic=not enable_dropout)
    return constrain(_layer_norm(cfg, name)(x + y), ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    """Self-attention then MLP, each post-normed (HF ``BartEncoderLayer``)."""

    config: BartConfig

    @nn.compact
    def __call__(self, x: Array, attention_bias: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        y = Attention(cfg, cfg.encoder_attention_heads, name="attention")(x, x, attention_bias, enable_dropout)
        x = _post_norm(cfg, "attention_norm", x, y, enable_dropout)
        y = Mlp(cfg, cfg.encoder_ffn_dim, name="mlp")(x, enable_dropout)
        return _post_norm(cfg, "mlp_norm", x, y, enable_dropout)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, MLP, each post-normed (HF ``BartDecoderLayer``)."""

    config: BartConfig

    @nn.compact
    def __call__(
        self,
        x: Array,
        encoded: Array,
        self_attention_bias: Array,
        cross_attention_bias: Array,
        enable_dropout: bool = False,
        decode: bool = False,
        cache_index: Array | None = None,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        heads = cfg.decoder_attention_heads
        y = Attention(cfg, heads, name="self_attention")(
            x, x, self_attention_bias, enable_dropout, decode, cache_index, max_decode_length
        )
        x = _post_norm(cfg, "self_attention_norm", x, y, enable_dropout)
        y = Attention(cfg, heads, cross_attention=True, name="encoder_decoder_attention")(
            x, encoded, cross_attention_bias, enable_dropout, decode
        )
        x = _post_norm(cfg, "encoder_decoder_attention_norm", x, y, enable_dropout)
        y = Mlp(cfg, cfg.decoder_ffn_dim, name="mlp")(x, enable_dropout)
        return _post_norm(cfg, "mlp_norm", x, y, enable_dropout)


def _check_length(cfg: BartConfig, length: int, what: str) -> None:
    # Beyond the table a gather would silently read NaNs (JAX fills out-of-bounds rows).
    if length > cfg.max_position_embeddings:
        raise ValueError(f"{what} of length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}")


def _embed(
    cfg: BartConfig, shared_embedding: nn.Module, tokens: Array, positions: Array, enable_dropout: bool
) -> Array:
    """Scaled token embedding + learned position embedding, ``layernorm_embedding``, dropout.

    Called inside a stack's compact ``__call__``: the position table and the norm become that stack's
    ``position_embedder`` and ``embedding_norm``.
    """
    position_table = nn.Embed(
        num_embeddings=cfg.max_position_embeddings + POSITION_OFFSET,
        features=cfg.d_model,
        embedding_init=normal_init(cfg.init_std, ("positions", "embed")),
        name="position_embedder",
        **compute_dtypes(cfg),
    )
    x = shared_embedding(tokens.astype(jnp.int32)) * cfg.embed_scale
    x = x + position_table(positions + POSITION_OFFSET)
    x = _layer_norm(cfg, "embedding_norm")(x)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    return constrain(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
    """Encoder stack: embeddings, post-LN layers (BART has no final norm)."""

    config: BartConfig
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        cfg = self.config
        _check_length(cfg, tokens.shape[1], "encoder input")
        if segment_ids is None:
            mask = key_valid(tokens, None, cfg.pad_token_id)[:, None, None, :]
        else:
            mask = segment_mask(segment_ids, segment_ids)
        if positions is None:
            positions = default_positions(tokens.shape[1])
        x = _embed(cfg, self.shared_embedding, tokens, positions, enable_dropout)
        bias = mask_bias(mask)
        layer_cls = maybe_remat(EncoderLayer, cfg, enable_dropout_argnum=3)
        if cfg.scan_layers:
            return scan_stack(layer_cls(cfg, name="layers"), cfg.num_encoder_layers, x, bias, enable_dropout)
        for i in range(cfg.num_encoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, bias, enable_dropout)
        return x


class Decoder(nn.Module):
    """Decoder stack plus LM head.

    ``decode=True`` processes a single step ([B, 1] tokens): the step number lives in the
    ``cache/decoder/cache_index`` variable and is both the query's position and where each layer
    writes its keys/values. All cache variables are created on the first such call.
    """

    config: BartConfig
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded: Array,
        encoder_tokens: Array,
        decoder_tokens: Array,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        cache_index = None
        if decode:
            if decoder_tokens.shape[1] != 1 or max_decode_length is None:
                raise ValueError("decode=True takes one [B, 1] step of tokens and needs max_decode_length")
            if decoder_segment_ids is not None or decoder_positions is not None:
                raise ValueError("decode=True decodes unpacked rows: drop decoder segment ids and positions")
            _check_length(cfg, max_decode_length, "decoding")
            index_var = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            cache_index = index_var.value
            index_var.value = cache_index + 1
            decoder_positions = cache_index[None, None]
            self_mask = (default_positions(max_decode_length) <= cache_index)[:, None, None, :]
        else:
            length = decoder_tokens.shape[1]
            _check_length(cfg, length, "decoder input")
            self_mask = jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]
            if decoder_segment_ids is not None:
                self_mask = self_mask & segment_mask(decoder_segment_ids, decoder_segment_ids)
            if decoder_positions is None:
                decoder_positions = default_positions(length)

        if encoder_segment_ids is None or decoder_segment_ids is None or decode:
            cross_mask = key_valid(encoder_tokens, encoder_segment_ids, cfg.pad_token_id)[:, None, None, :]
        else:
            cross_mask = segment_mask(decoder_segment_ids, encoder_segment_ids)

        x = _embed(cfg, self.shared_embedding, decoder_tokens, decoder_positions, enable_dropout)
        # Rematerialisation only pays off when a backward pass follows, never in cached decoding.
        layer_cls = DecoderLayer if decode else maybe_remat(DecoderLayer, cfg, enable_dropout_argnum=5)
        args = (encoded, mask_bias(self_mask), mask_bias(cross_mask), enable_dropout)
        if decode:
            args += (True, cache_index, max_decode_length)
        if cfg.scan_layers:
            x = scan_stack(layer_cls(cfg, name="layers"), cfg.num_decoder_layers, x, *args)
        else:
            for i in range(cfg.num_decoder_layers):
                x = layer_cls(cfg, name=f"layers_{i}")(x, *args)
        return self._logits(x, enable_dropout)

    def _logits(self, x: Array, enable_dropout: bool) -> Array:
        """LM head in the compute dtype with float32 accumulation, plus ``final_logits_bias``, float32 out."""
        cfg = self.config
        if cfg.tie_word_embeddings:
            embedding = self.shared_embedding.embedding.astype(x.dtype)
            logits = jnp.einsum("btd,vd->btv", x, embedding, preferred_element_type=jnp.float32)
        else:
            head = Dense(
                cfg,
                (cfg.d_model,),
                ("embed",),
                (cfg.vocab_size,),
                ("vocab",),
                "lm_head",
                use_bias=False,
                float32_output=True,
                name="logits_dense",
            )
            logits = head(x, enable_dropout)
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


def init_params(
    config: BartConfig, rng: Array, batch_size: int = 1, input_len: int = 8, target_len: int = 8
) -> dict[str, Any]:
    """Randomly initialised parameters, boxed in ``nn.Partitioned`` (logical axis names), like ``t5.init_params``."""
    model = BartTransformer(config)
    encoder_tokens = jnp.ones((batch_size, input_len), jnp.int32)
    decoder_tokens = jnp.ones((batch_size, target_len), jnp.int32)
    return jax.jit(model.init)({"params": rng}, encoder_tokens, decoder_tokens)["params"]
