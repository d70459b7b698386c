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
import jax.numpy as jnp
import numpy as np

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


# Helpers every family's stacks and the code that feeds them share.


def maybe_remat(layer_cls: type[nn.Module], cfg: Any, enable_dropout_argnum: int) -> type[nn.Module]:
    """Wraps a layer in ``nn.remat`` per ``cfg.remat``; ``enable_dropout`` must stay static."""
    if cfg.remat == "none":
        return layer_cls
    policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if cfg.remat == "dots_saveable" else None
    # static_argnums counts ``self`` as argument 0. Inside a scan the loop already keeps XLA from
    # merging the recomputation into the forward pass, so the CSE barrier would only cost time.
    return nn.remat(layer_cls, policy=policy, static_argnums=(enable_dropout_argnum,), prevent_cse=not cfg.scan_layers)


def _apply_layer(layer: nn.Module, x: Array, *args: Any) -> tuple[Array, None]:
    return layer(x, *args), None


def scan_stack(layer: nn.Module, num_layers: int, x: Array, *broadcast_args: Any) -> Array:
    """``layer`` applied ``num_layers`` times as one ``nn.scan``: one traced layer instead of N.

    Each iteration takes its own slice of the parameters and of the decode cache (stacked on
    axis 0, logical name "layers") and its own dropout key; ``broadcast_args`` are the same for
    every layer.
    """
    scan = nn.scan(
        _apply_layer,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * len(broadcast_args),
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return scan(layer, x, *broadcast_args)[0]


def run_layers(layer_cls: type[nn.Module], cfg: Any, num_layers: int, x: Array, *args: Any) -> Array:
    """A stack's ``num_layers`` layers over ``x``: one scanned ``layers`` module with ``cfg.scan_layers``,
    else ``layers_<i>``; ``args`` are the same for every layer. Called inside the stack's compact method."""
    if cfg.scan_layers:
        return scan_stack(layer_cls(cfg, name="layers"), num_layers, x, *args)
    for i in range(num_layers):
        x = layer_cls(cfg, name=f"layers_{i}")(x, *args)
    return x


def start_decode_step(
    decoder: nn.Module,
    decoder_tokens: Array,
    decoder_segment_ids: Array | None,
    decoder_positions: Array | None,
    max_decode_length: int | None,
) -> Array:
    """Checks one cached step's inputs and advances ``decoder``'s ``cache/cache_index``; returns this step's index.

    The index is both the query's position and where each layer writes its keys/values; the cache
    variables are all created on the first step.
    """
    if decoder_tokens.shape[1] != 1 or max_decode_length is None:
        raise ValueError("decode=True takes one [B, 1] step of tokens and needs max_decode_length")
    if decoder_segment_ids is not None or decoder_positions is not None:
        raise ValueError("decode=True decodes unpacked rows: drop decoder segment ids and positions")
    index_var = decoder.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    index = index_var.value
    index_var.value = index + 1
    return index


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
