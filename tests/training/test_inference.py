"""The inference runner: rows of a global batch split over the batch shards and come back in order."""

import jax.numpy as jnp
import numpy as np

from distill_jax.config import DEFAULT_LOGICAL_AXIS_RULES
from distill_jax.training import partitioning
from distill_jax.training.inference import InferenceRunner

PAD, EOS = 0, 1


def _runner() -> InferenceRunner:
    mesh = partitioning.make_mesh(data=-1)  # the 8 virtual devices, all on the batch axis
    return InferenceRunner(mesh, DEFAULT_LOGICAL_AXIS_RULES, local_batch=8)


def test_token_block_pads_rows_and_fills_the_rest_with_eos():
    runner = _runner()
    rows = [np.array([5, 6, 1]), np.array([7, 1])]
    block = runner.token_block(rows, 4, pad_id=PAD, eos_id=EOS)
    assert block.shape == (8, 4) and block.dtype == np.int32
    np.testing.assert_array_equal(block[0], [5, 6, 1, PAD])
    np.testing.assert_array_equal(block[1], [7, 1, PAD, PAD])
    np.testing.assert_array_equal(block[2:], np.tile([EOS, PAD, PAD, PAD], (6, 1)))


def test_a_ragged_list_runs_batch_by_batch_and_every_row_comes_back_in_order():
    runner = _runner()
    rows = [np.arange(1, 2 + i % 5) for i in range(19)]  # three global batches, the last holding 3 real rows
    # Outputs of any rank, and a scalar input passed as it is on every process.
    fn = runner.jit(lambda params, x, shift: (jnp.sum(x, axis=-1) + shift * params, x[:, None, :] * 2))
    sums, doubled = [], []
    for start in range(0, len(rows), runner.global_batch):
        real = runner.local_rows(start, len(rows))
        block = runner.token_block([rows[i] for i in real], 6, pad_id=PAD, eos_id=EOS)
        row_sums, row_doubled = fn(jnp.float32(10.0), block, np.int32(start))
        assert row_sums.shape == (8,) and row_doubled.shape == (8, 1, 6)
        sums.extend(row_sums[: len(real)])
        doubled.extend(row_doubled[: len(real), 0])
    assert len(sums) == len(rows)
    for start_of, (row, total, twice) in enumerate(zip(rows, sums, doubled)):
        start = start_of - start_of % runner.global_batch
        assert total == row.sum() + 10.0 * start
        np.testing.assert_array_equal(twice[: len(row)], 2 * row)


def test_compile_ahead_gives_the_jitted_result():
    runner = _runner()
    block = runner.token_block([np.array([3, 4, 1])], 3, pad_id=PAD, eos_id=EOS)
    square = lambda params, x: x * x + params  # noqa: E731
    np.testing.assert_array_equal(runner.compile(square, 1, block)(1, block), runner.jit(square)(1, block))
