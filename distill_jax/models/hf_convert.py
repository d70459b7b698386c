"""One table-driven converter between a family's parameters and its transformers state dict, both directions.

A family gives a layout (every parameter path -> its HF tensor name and how that tensor holds it) and
the names of its shared embedding; ``HfConverter`` imports (checking every tensor's presence and shape,
naming each problem), exports, and writes the LoRA adapters in PEFT's names. ``hf_t5`` and ``hf_bart``
hold the two layouts and what is particular to each (config.json, BART's prefix-less checkpoints).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from distill_jax.models.encoder_decoder import EncoderDecoder, stack_layers, unstack_layers
from distill_jax.models.hf_files import check_params_match, peft_state_dict

# How an HF tensor holds one of our parameters: an int n is a torch Linear weight [out, in] of a
# kernel with n input dims; "flat" a 1-D bias of a multi-dim one; "row" a [1, V] row (BART's
# final_logits_bias); None the same shape.
Kind = int | str | None
Layout = dict[tuple[str, ...], tuple[str, Kind]]


def hf_shape(shape: tuple[int, ...], kind: Kind) -> tuple[int, ...]:
    """The HF tensor shape of a parameter of ``shape`` held as ``kind``."""
    if kind is None:
        return shape
    if kind == "flat":
        return (math.prod(shape),)
    if kind == "row":
        return (1, math.prod(shape))
    return (math.prod(shape[kind:]), math.prod(shape[:kind]))


def _per_layer(config: Any, params: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A ``scan_layers`` model's config and params in the per-layer layout HF's names follow."""
    return dataclasses.replace(config, scan_layers=False), unstack_layers(dict(params), config)


@dataclasses.dataclass(frozen=True)
class HfConverter:
    """A family's parameters <-> transformers' state dict, driven by its ``layout``."""

    model: type[EncoderDecoder]  # the family's model class (its parameters' shapes and, in messages, its name)
    layout: Callable[[Any], Layout]  # per-layer config -> every parameter's HF tensor
    shared: str  # the HF name of the one embedding encoder, decoder (and a tied head) share
    aliases: tuple[str, ...]  # copies of ``shared`` that HF state dicts also hold
    ignored: frozenset[str] = frozenset()  # tensors HF checkpoints carry and transformers ignores
    zeros_if_missing: frozenset[str] = frozenset()  # tensors transformers starts at zeros when absent

    @property
    def name(self) -> str:
        """The family in messages: "T5", "BART"."""
        return self.model.__name__.removesuffix("Transformer").upper()

    def expected_shapes(self, config: Any) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
        """Flattened parameter shapes of the family's model for ``config``, checked against the layout."""
        expected = traverse_util.flatten_dict(
            nn.meta.unbox(jax.eval_shape(lambda: self.model.init_params(config, jax.random.PRNGKey(0))))
        )
        layout = self.layout(config)
        if set(layout) != set(expected):
            raise RuntimeError(
                f"HF {self.name} layout out of sync with the model: {sorted(set(layout) ^ set(expected))}"
            )
        return expected

    def _alias_errors(self, state_dict: Mapping[str, Any], config: Any) -> list[str]:
        """Copies of the shared embedding that hold other values (the model has one embedding)."""
        aliases = self.aliases + (("lm_head.weight",) if config.tie_word_embeddings else ())
        if self.shared not in state_dict:
            return []
        shared = np.asarray(state_dict[self.shared])
        return [
            f"{name} differs from {self.shared}, which this config shares"
            for name in aliases
            if name in state_dict and not np.array_equal(np.asarray(state_dict[name]), shared)
        ]

    def params_from_state_dict(self, state_dict: Mapping[str, Any], config: Any) -> dict[str, Any]:
        """An HF state dict -> an unboxed parameter tree for the family's model of ``config``.

        Values may be numpy arrays or anything ``np.asarray`` accepts (CPU torch tensors). The result
        holds host numpy arrays in ``config.param_dtype`` (layers stacked when ``config.scan_layers``).
        Raises ``ValueError`` naming every missing, unexpected, wrong-shape or inconsistently aliased tensor.
        """
        if config.scan_layers:  # HF names tensors per layer: convert per layer, then stack.
            flat_config = dataclasses.replace(config, scan_layers=False)
            return stack_layers(self.params_from_state_dict(state_dict, flat_config), flat_config)
        expected = self.expected_shapes(config)
        layout = self.layout(config)
        dtype = jnp.dtype(config.param_dtype)
        errors = self._alias_errors(state_dict, config)
        params = {}
        for path, (name, kind) in layout.items():
            shape = expected[path].shape
            if name in self.zeros_if_missing and name not in state_dict:
                params[path] = np.zeros(shape, dtype)
                continue
            if name not in state_dict:
                errors.append(f"missing {name}")
                continue
            tensor = np.asarray(state_dict[name])
            if tensor.shape != hf_shape(shape, kind):
                errors.append(f"{name} has shape {tensor.shape}, expected {hf_shape(shape, kind)}")
                continue
            params[path] = (tensor.T if isinstance(kind, int) else tensor).reshape(shape).astype(dtype)

        known = {name for name, _ in layout.values()} | self.ignored | set(self.aliases) | {"lm_head.weight"}
        errors += [f"unexpected {name}" for name in sorted(set(state_dict) - known)]
        if errors:
            raise ValueError(f"HF {self.name} state dict does not match the config:\n  " + "\n  ".join(errors))
        return traverse_util.unflatten_dict(params)

    def state_dict_from_params(self, params: Mapping[str, Any], config: Any) -> dict[str, np.ndarray]:
        """The HF state dict of the family's parameters (the inverse of ``params_from_state_dict``), each
        tensor in the parameters' dtype and written once: the shared embedding only as ``shared``.

        Raises ``ValueError`` naming every missing, unexpected or wrong-shape parameter.
        """
        if config.scan_layers:
            config, params = _per_layer(config, params)
        expected = self.expected_shapes(config)
        flat = traverse_util.flatten_dict(params)
        check_params_match(flat, expected)
        state = {}
        for path, (name, kind) in self.layout(config).items():
            value = np.asarray(flat[path])
            if isinstance(kind, int):  # Back to a torch Linear weight [out, in].
                value = value.reshape(math.prod(value.shape[:kind]), -1).T
            state[name] = np.ascontiguousarray(value.reshape(hf_shape(expected[path].shape, kind)))
        return state

    def peft_state_dict(self, params: Mapping[str, Any], config: Any) -> dict[str, np.ndarray]:
        """The LoRA adapters of ``params`` as PEFT names them on the transformers model (``hf_files.peft_state_dict``)."""
        if config.scan_layers:
            config, params = _per_layer(config, params)
        layout = self.layout(dataclasses.replace(config, lora_rank=0))
        linear = {path: name for path, (name, kind) in layout.items() if isinstance(kind, int)}
        return peft_state_dict(params, linear, config.lora_rank)
