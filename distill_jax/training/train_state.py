"""The train state and how it is created already sharded over the mesh.

The state is created by one jitted function with `out_shardings`, so each device only ever
materialises its own shards: a model bigger than one host's memory can still be initialised.
The same abstract state (shapes + shardings) is what checkpoints restore onto.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from distill_jax.models.family import ModelConfig, init_params
from distill_jax.training import partitioning


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def state_shardings(
    model_config: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh, rules: partitioning.LogicalRules
) -> tuple[TrainState, TrainState]:
    """(abstract state, shardings): the shapes of the state and where each leaf lives.

    Params follow their logical axis names. Optimizer leaves shaped like their parameter (Adam's
    moments) share its sharding; anything else (counters, Adafactor's factored rows/columns) is small
    and replicated.
    """
    boxed = jax.eval_shape(lambda r: init_params(model_config, r), jax.random.key(0))
    param_shardings = partitioning.logical_shardings(boxed, mesh, rules)
    abstract_params = nn.unbox(boxed)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    replicated = partitioning.replicated(mesh)

    def leaf_sharding(leaf: Any, sharding: Any, param: Any) -> Any:
        if isinstance(leaf, optax.MaskedNode):  # A frozen (LoRA base) param: no optimizer state.
            return leaf
        return sharding if _shape_of(leaf) == _shape_of(param) else replicated

    opt_shardings = optax.tree_map_params(
        tx,
        leaf_sharding,
        abstract_opt,
        param_shardings,
        abstract_params,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (jax.ShapeDtypeStruct, optax.MaskedNode)),
    )
    shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params, opt_state=abstract_opt)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract, shardings


def create_train_state(
    model_config: ModelConfig,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules: partitioning.LogicalRules,
    seed: int,
) -> TrainState:
    """Initialises params and optimizer state directly into their shards."""
    _, shardings = state_shardings(model_config, tx, mesh, rules)

    def init(rng: jax.Array) -> TrainState:
        params = nn.unbox(init_params(model_config, rng))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    # No mesh context here: out_shardings alone places the result, and activation constraints are
    # irrelevant at init (inside a mesh, flax would constrain DenseGeneral's flat kernel with 3-D names).
    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def count_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
