"""The interface every student family shares: ``encode``, cached one-step ``decode``, teacher-forced ``__call__``.

The train step, IFD scoring, the evaluator, the generate job and the three decoders in
``decoding.py`` call only these three methods, so a family (``t5.T5Transformer``,
``bart.BartTransformer``) supplies its ``Encoder`` and ``Decoder`` stacks (``stacks.py``; its config
gives the shared embedding's ``embedding_init_std``) and inherits the rest. Parameter paths
(``token_embedder``, ``encoder``, ``decoder``) come from the attribute names set here and are the
same for every family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.models.attention import cross_mask, mask_bias
from distill_jax.models.layers import compute_dtypes, normal_init
from distill_jax.models.stacks import DecoderStack, EncoderStack, check_decode_inputs

Array = jax.Array


class EncoderDecoder(nn.Module):
    """Base of the student families; subclasses set ``encoder_cls`` and ``decoder_cls``.

    Both are ``stacks`` subclasses: the encoder is called as ``(tokens, segment_ids, positions,
    enable_dropout)``; the decoder gets the cross-attention biases built here (they depend on both
    sides' tokens and segments, not on the decoder's parameters) and returns float32 logits.
    """

    config: Any
    encoder_cls: ClassVar[type[EncoderStack]]
    decoder_cls: ClassVar[type[DecoderStack]]

    def setup(self) -> None:
        cfg = self.config
        self.token_embedder = nn.Embed(
            num_embeddings=cfg.vocab_size,
            features=cfg.d_model,
            embedding_init=normal_init(cfg.embedding_init_std, ("vocab", "embed")),
            **compute_dtypes(cfg),
        )
        self.encoder = self.encoder_cls(cfg, shared_embedding=self.token_embedder)
        self.decoder = self.decoder_cls(cfg, shared_embedding=self.token_embedder)

    def encode(
        self,
        encoder_input_tokens: Array,
        *,
        encoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        """Encoder output [B, S, d_model] in the compute dtype."""
        return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions, enable_dropout)

    def decode(
        self,
        encoded: Array,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        *,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        """Decoder logits [B, T, vocab] float32; ``decode=True`` runs one cached step (T = 1)."""
        if decode:
            check_decode_inputs(decoder_input_tokens, decoder_segment_ids, decoder_positions, max_decode_length)
        pad_id = self.config.pad_token_id
        mask = cross_mask(encoder_input_tokens, encoder_segment_ids, decoder_segment_ids, pad_id, decode)
        return self.decoder(
            encoded,
            (mask_bias(mask),),
            decoder_input_tokens,
            decoder_segment_ids,
            decoder_positions,
            enable_dropout,
            max_decode_length if decode else None,
        )

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        *,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        decoder_positions: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        """Teacher-forced logits [B, T, vocab] float32."""
        encoded = self.encode(
            encoder_input_tokens,
            encoder_segment_ids=encoder_segment_ids,
            encoder_positions=encoder_positions,
            enable_dropout=enable_dropout,
        )
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            enable_dropout=enable_dropout,
        )

    @classmethod
    def init_params(
        cls, config: Any, rng: Array, batch_size: int = 1, input_len: int = 8, target_len: int = 8
    ) -> dict[str, Any]:
        """Randomly initialised parameters of ``cls(config)``, boxed in ``nn.Partitioned`` (logical axis names).

        Use ``nn.get_partition_spec`` / ``nn.logical_to_mesh_sharding`` for shardings and
        ``nn.meta.unbox`` for plain arrays; ``jax.eval_shape`` of this gives shapes without memory.
        """
        encoder_tokens = jnp.ones((batch_size, input_len), jnp.int32)
        decoder_tokens = jnp.ones((batch_size, target_len), jnp.int32)
        return jax.jit(cls(config).init)({"params": rng}, encoder_tokens, decoder_tokens)["params"]


def shift_right(targets: Array, decoder_start_token_id: int = 0, segment_ids: Array | None = None) -> Array:
    """Teacher-forcing decoder inputs: targets shifted right by one with the start token first.

    With ``segment_ids`` (packed rows) every segment starts with the start token instead of
    the previous segment's last token.
    """
    start = jnp.full_like(targets[:, :1], decoder_start_token_id)
    shifted = jnp.concatenate([start, targets[:, :-1]], axis=1)
    if segment_ids is None:
        return shifted
    segment_start = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], jnp.bool_), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    return jnp.where(segment_start, decoder_start_token_id, shifted).astype(targets.dtype)


def _stacks(config: Any) -> tuple[tuple[str, int], ...]:
    return (("encoder", config.num_encoder_layers), ("decoder", config.num_decoder_layers))


def stack_layers(params: dict[str, Any], config: Any) -> dict[str, Any]:
    """Per-layer params (``layers_<i>``) -> the ``scan_layers`` layout (one ``layers`` subtree, leaves stacked).

    Host-side (numpy) conversion, for import/export and tests; ``config`` gives the layer counts.
    """
    out = dict(params)
    for stack, num_layers in _stacks(config):
        subtree = dict(params[stack])
        layers = [subtree.pop(f"layers_{i}") for i in range(num_layers)]
        out[stack] = {**subtree, "layers": jax.tree.map(lambda *xs: np.stack(xs), *layers)}
    return out


def unstack_layers(params: dict[str, Any], config: Any) -> dict[str, Any]:
    """The inverse of ``stack_layers``: the ``scan_layers`` layout -> per-layer ``layers_<i>`` subtrees."""
    out = dict(params)
    for stack, num_layers in _stacks(config):
        subtree = dict(params[stack])
        stacked = subtree.pop("layers")
        layers = {f"layers_{i}": jax.tree.map(lambda x, i=i: np.asarray(x[i]), stacked) for i in range(num_layers)}
        out[stack] = {**subtree, **layers}
    return out
