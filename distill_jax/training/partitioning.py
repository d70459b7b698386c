"""Device mesh and logical-axis partitioning: the only place that knows how arrays map onto devices.

Model code names array dimensions logically ("embed", "heads", "batch", ...); the rules in the
config map those names to mesh axes (data, fsdp, tensor). Changing the parallelism of a run is a
config change, never a model change (the t5x/MaxText design).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from distill_jax.config import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

LogicalRules = Sequence[tuple[str, Any]]


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """Resolves -1 (at most one axis) to the devices left over, and checks the product."""
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ConfigError(f"mesh: at most one of data/fsdp/tensor may be -1, got {sizes}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh: axis sizes must be positive or -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(
                f"mesh: {num_devices} devices are not divisible by fsdp*tensor*... = {known}; "
                "set --config.mesh.* so the product divides the device count"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ConfigError(
            f"mesh: data*fsdp*tensor = {sizes[0]}*{sizes[1]}*{sizes[2]} = {int(np.prod(sizes))} but there are "
            f"{num_devices} devices; set one axis to -1 or make the product match"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all (or the given) devices.

    jax.make_mesh orders devices so that the innermost axis (tensor) sits on the fastest links.
    """
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    # Auto axes: XLA's partitioner propagates shardings from the logical constraints we place.
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if devices == jax.devices():
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: LogicalRules) -> Iterator[None]:
    """The mesh and logical rules that model code traced inside must see (its sharding constraints use both)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        yield


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """NamedShardings for a tree whose leaves may be boxed with logical names (nn.Partitioned/LogicallyPartitioned).

    Leaves without logical names (optimizer counters, step) are replicated.
    """
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def batch_sharding(mesh: Mesh, rules: LogicalRules, ndim: int) -> NamedSharding:
    """Sharding for a batch array of rank ndim: leading dim on the "batch" logical axis, rest replicated."""
    logical = ("batch",) + (None,) * (ndim - 1)
    return NamedSharding(mesh, nn.logical_to_mesh_axes(logical, list(rules)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh, rules: LogicalRules) -> int:
    """How many ways the batch dimension is split (the global batch must divide by it)."""
    spec = nn.logical_to_mesh_axes(("batch",), list(rules))[0]
    if spec is None:
        return 1
    axes = (spec,) if isinstance(spec, str) else spec
    return int(np.prod([mesh.shape[a] for a in axes]))
