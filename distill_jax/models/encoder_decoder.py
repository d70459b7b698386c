"""The interface every student family shares: ``encode``, cached one-step ``decode``, teacher-forced ``__call__``.

The train step, IFD scoring, the evaluator, the generate job and the three decoders in
``decoding.py`` call only these three methods, so a family (``t5.T5Transformer``,
``bart.BartTransformer``) supplies its ``Encoder`` and ``Decoder`` modules (its config gives the
shared embedding's ``embedding_init_std``) and inherits the rest. Parameter paths (``token_embedder``, ``encoder``,
``decoder``) come from the attribute names set here and are the same for every family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax

from distill_jax.models.layers import compute_dtypes, normal_init

Array = jax.Array


class EncoderDecoder(nn.Module):
    """Base of the student families; subclasses set ``encoder_cls`` and ``decoder_cls``.

    ``encoder_cls(config, shared_embedding=...)`` is called as ``(tokens, segment_ids, positions,
    enable_dropout)``; ``decoder_cls(config, shared_embedding=...)`` as ``(encoded, encoder_tokens,
    decoder_tokens, encoder_segment_ids, decoder_segment_ids, decoder_positions, enable_dropout,
    decode, max_decode_length)`` and returns float32 logits.
    """

    config: Any
    encoder_cls: ClassVar[type[nn.Module]]
    decoder_cls: ClassVar[type[nn.Module]]

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
        return self.decoder(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            decoder_positions,
            enable_dropout,
            decode,
            max_decode_length,
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
