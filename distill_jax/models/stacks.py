"""The encoder and decoder stacks and layers both families run; a family supplies their parts.

A stack embeds its tokens, builds the attention biases once, runs its layers (``run_layers``: per
layer or one ``nn.scan``, each optionally rematerialised) and finishes; a layer chains self-attention
(cross-attention in the decoder) and an MLP, each a ``_sublayer`` that rejoins the residual stream as
the family does (T5 pre-norm, BART post-norm). A family subclasses ``EncoderStack``/``DecoderStack``
and ``EncoderLayer``/``DecoderLayer`` with those hooks; every module it creates keeps its explicit
name, so the parameter and cache paths are the family's own (``hf_t5``/``hf_bart`` map them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models.attention import DecodeStep, default_positions, padding_mask

Array = jax.Array
Sublayer = Callable[[Array], Array]


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


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class Layer(nn.Module):
    """The parts a family's layers are made of; ``EncoderLayer`` and ``DecoderLayer`` chain them.

    ``norms`` names the layer's norms, one per sublayer in order (their parameter names).
    """

    config: Any
    norms: ClassVar[tuple[str, ...]]

    def _attention(self, name: str, cross_attention: bool = False) -> nn.Module:
        """A new attention module (an ``attention.CachedAttention``) called ``name``."""
        raise NotImplementedError

    def _mlp(self) -> nn.Module:
        """A new feed-forward module, called as ``(x, enable_dropout)``."""
        raise NotImplementedError

    def _sublayer(self, norm: str, x: Array, sublayer: Sublayer, enable_dropout: bool) -> Array:
        """``x`` with ``sublayer``'s output joined back, through the norm called ``norm``."""
        raise NotImplementedError


class EncoderLayer(Layer):
    """Self-attention then MLP."""

    @nn.compact
    def __call__(self, x: Array, attention_biases: Sequence[Array], enable_dropout: bool = False) -> Array:
        attention_norm, mlp_norm = self.norms

        def attention(y: Array) -> Array:
            return self._attention("attention")(y, y, attention_biases, enable_dropout)

        x = self._sublayer(attention_norm, x, attention, enable_dropout)
        return self._sublayer(mlp_norm, x, lambda y: self._mlp()(y, enable_dropout), enable_dropout)


class DecoderLayer(Layer):
    """Causal self-attention, cross-attention over the encoder output, MLP; ``step`` when decoding."""

    @nn.compact
    def __call__(
        self,
        x: Array,
        encoded: Array,
        self_attention_biases: Sequence[Array],
        cross_attention_biases: Sequence[Array],
        enable_dropout: bool = False,
        step: DecodeStep | None = None,
    ) -> Array:
        self_attention_norm, cross_attention_norm, mlp_norm = self.norms

        def self_attention(y: Array) -> Array:
            return self._attention("self_attention")(y, y, self_attention_biases, enable_dropout, step)

        def cross_attention(y: Array) -> Array:
            attention = self._attention("encoder_decoder_attention", cross_attention=True)
            return attention(y, encoded, cross_attention_biases, enable_dropout, step)

        x = self._sublayer(self_attention_norm, x, self_attention, enable_dropout)
        x = self._sublayer(cross_attention_norm, x, cross_attention, enable_dropout)
        return self._sublayer(mlp_norm, x, lambda y: self._mlp()(y, enable_dropout), enable_dropout)


# ----------------------------------------------------------------------------------------------
# Stacks
# ----------------------------------------------------------------------------------------------


class Stack(nn.Module):
    """What a family's two stacks share: the shared token embedding and their hooks.

    ``_embed`` turns tokens (and their positions) into the first layer's input; ``_finish`` is what
    follows the last layer (identity unless the family has a final norm).
    """

    config: Any
    shared_embedding: nn.Module
    layer_cls: ClassVar[type[nn.Module]]

    def _embed(self, tokens: Array, positions: Array, enable_dropout: bool) -> Array:
        raise NotImplementedError

    def _finish(self, x: Array, enable_dropout: bool) -> Array:
        return x


class EncoderStack(Stack):
    """Encoder: embedding, ``layer_cls`` layers over the padding (or segment) mask, ``_finish``."""

    def _biases(self, positions: Array, mask: Array) -> tuple[Array, ...]:
        """The self-attention biases of every layer, from the positions and the boolean ``mask``."""
        raise NotImplementedError

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        cfg = self.config
        if positions is None:
            positions = default_positions(tokens.shape[1])
        biases = self._biases(positions, padding_mask(tokens, segment_ids, cfg.pad_token_id))
        x = self._embed(tokens, positions, enable_dropout)
        layer_cls = maybe_remat(self.layer_cls, cfg, enable_dropout_argnum=3)
        x = run_layers(layer_cls, cfg, cfg.num_encoder_layers, x, biases, enable_dropout)
        return self._finish(x, enable_dropout)


class DecoderStack(Stack):
    """Decoder plus LM head: embedding, ``layer_cls`` layers, ``_finish``, ``_logits`` (float32).

    Given ``max_decode_length`` it runs one cached step ([B, 1] tokens): the step number lives in
    the ``cache/decoder/cache_index`` variable and is both the query's position and where each layer
    writes its keys/values. All cache variables are created, zeroed (the cross-attention ones filled
    from ``encoded``), on the first such call.
    """

    def _full_biases(self, length: int, segment_ids: Array | None, positions: Array) -> tuple[Array, ...]:
        """Causal self-attention biases of a teacher-forced pass over ``length`` tokens."""
        raise NotImplementedError

    def _step_biases(self, cache_index: Array, max_decode_length: int) -> tuple[Array, ...]:
        """Self-attention biases of the current step against the whole cache."""
        raise NotImplementedError

    def _logits(self, x: Array, enable_dropout: bool) -> Array:
        raise NotImplementedError

    @nn.compact
    def __call__(
        self,
        encoded: Array,
        cross_attention_biases: tuple[Array, ...],
        tokens: Array,
        segment_ids: Array | None,
        positions: Array | None,
        enable_dropout: bool,
        max_decode_length: int | None,
    ) -> Array:
        cfg = self.config
        step = None
        if max_decode_length is None:
            if positions is None:
                positions = default_positions(tokens.shape[1])
            self_biases = self._full_biases(tokens.shape[1], segment_ids, positions)
        else:
            step = self._advance(max_decode_length)
            positions = step.index[None, None]
            self_biases = self._step_biases(step.index, step.length)
        x = self._embed(tokens, positions, enable_dropout)
        # Rematerialisation only pays off when a backward pass follows, never in cached decoding.
        layer_cls = maybe_remat(self.layer_cls, cfg, enable_dropout_argnum=5) if step is None else self.layer_cls
        args = (encoded, self_biases, cross_attention_biases, enable_dropout, step)
        x = run_layers(layer_cls, cfg, cfg.num_decoder_layers, x, *args)
        return self._logits(self._finish(x, enable_dropout), enable_dropout)

    def _advance(self, max_decode_length: int) -> DecodeStep:
        """This step, advancing ``cache/cache_index`` (created on the first step)."""
        index_var = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        index = index_var.value
        index_var.value = index + 1
        return DecodeStep(index, max_decode_length)


def check_decode_inputs(
    decoder_tokens: Array,
    decoder_segment_ids: Array | None,
    decoder_positions: Array | None,
    max_decode_length: int | None,
) -> None:
    """Raises ``ValueError`` unless the inputs are one cached step's: [B, 1] unpacked tokens and a cache length."""
    if decoder_tokens.shape[1] != 1 or max_decode_length is None:
        raise ValueError("decode=True takes one [B, 1] step of tokens and needs max_decode_length")
    if decoder_segment_ids is not None or decoder_positions is not None:
        raise ValueError("decode=True decodes unpacked rows: drop decoder segment ids and positions")
