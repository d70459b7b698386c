"""One sharded inference loop: token rows in, a jitted function over the mesh, this process's rows out.

The train-time evaluator, the generate job and IFD scoring all run through it. Global batch b holds
rows [b * B, (b + 1) * B) of one ordered list; each process feeds its share of them (its
``local_rows``), the batch is sharded over the mesh's batch axes, and every output comes back sharded
the same way, as this process's rows. What a caller then does with its rows (sum them over processes,
gather them to process 0, gather them everywhere) stays the caller's. The last batch is filled up to
the global batch with rows holding just EOS (an all-padding row would attend to nothing); the caller
knows how many rows are real and drops the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from distill_jax.training import partitioning


@dataclasses.dataclass(frozen=True)
class InferenceRunner:
    """Where a global batch's rows live (process and devices) and how a function is run on them."""

    mesh: Mesh
    rules: partitioning.LogicalRules
    # Rows each process feeds per global batch (run_setup.per_process_batch_size of the global batch).
    local_batch: int

    @property
    def global_batch(self) -> int:
        return self.local_batch * jax.process_count()

    def local_rows(self, start: int, end: int) -> range:
        """Indices (below ``end``) of this process's rows of the global batch that begins at row ``start``."""
        first = start + jax.process_index() * self.local_batch
        return range(first, min(first + self.local_batch, end))

    def token_block(self, rows: Sequence[np.ndarray], length: int, *, pad_id: int, eos_id: int) -> np.ndarray:
        """This process's ``rows`` of one global batch (its ``local_rows``' tokens) as a padded
        [local_batch, length] int32 block."""
        block = np.full((self.local_batch, length), pad_id, np.int32)
        block[:, 0] = eos_id  # the fill rows past the end
        for row, tokens in enumerate(rows):
            block[row, : len(tokens)] = tokens
        return block

    def jit(self, fn: Callable[..., Any]) -> ShardedFunction:
        """``fn(params, *inputs)``, compiled at its first call."""
        return ShardedFunction(self, jax.jit(fn, out_shardings=self._rows_sharding()))

    def compile(self, fn: Callable[..., Any], params: Any, *example_inputs: Any) -> ShardedFunction:
        """``fn(params, *inputs)`` compiled now, for inputs shaped like ``example_inputs`` (host-local rows)."""
        with partitioning.mesh_context(self.mesh, self.rules):
            lowered = jax.jit(fn, out_shardings=self._rows_sharding()).lower(params, *self.to_global(example_inputs))
            return ShardedFunction(self, lowered.compile())

    def to_global(self, host_inputs: Any) -> Any:
        """This process's rows (numpy arrays, any pytree) -> global arrays sharded over the batch axes.

        Scalars are passed as they are (the same value on every process, e.g. a batch index).
        """

        def put(x: Any) -> Any:
            if np.ndim(x) == 0:
                return x
            return jax.make_array_from_process_local_data(
                partitioning.batch_sharding(self.mesh, self.rules, np.ndim(x)), x
            )

        return jax.tree.map(put, host_inputs)

    def to_host(self, outputs: Any) -> Any:
        """Batch-sharded global outputs -> this process's rows of each, as numpy arrays."""
        spec = self._rows_sharding().spec
        return jax.tree.map(
            lambda x: np.asarray(multihost_utils.global_array_to_host_local_array(x, self.mesh, spec)), outputs
        )

    def _rows_sharding(self) -> jax.sharding.NamedSharding:
        # The batch axes on the leading dimension; the rest of any rank is replicated.
        return partitioning.batch_sharding(self.mesh, self.rules, 1)


@dataclasses.dataclass(frozen=True)
class ShardedFunction:
    """A jitted or compiled ``fn(params, *inputs)`` called with host-local rows, returning host-local rows."""

    runner: InferenceRunner
    compiled: Any

    def __call__(self, params: Any, *host_inputs: Any) -> Any:
        runner = self.runner
        with partitioning.mesh_context(runner.mesh, runner.rules):
            outputs = self.compiled(params, *runner.to_global(host_inputs))
        return runner.to_host(outputs)
