"""Meshes over 8 virtual CPU devices: data, fsdp, tensor and mixes give the single-device loss and update."""

import jax
import numpy as np
import pytest
from helpers import first_train_batch

from distill_jax.data import pipeline
from distill_jax.training import partitioning, step
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state


def test_mesh_shape_resolution_and_errors():
    assert partitioning.mesh_shape(-1, 2, 1, 8) == (4, 2, 1)
    assert partitioning.mesh_shape(2, 2, 2, 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one"):
        partitioning.mesh_shape(-1, -1, 1, 8)
    with pytest.raises(ValueError, match="not divisible"):
        partitioning.mesh_shape(-1, 3, 1, 8)
    with pytest.raises(ValueError, match="devices"):
        partitioning.mesh_shape(2, 2, 1, 8)


def one_step(cfg, devices, batch, dropout_prng="threefry2x32"):
    """Loss sums and params after one train step on a mesh over `devices`."""
    run = setup_run(cfg)
    mesh = partitioning.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor, devices=devices)
    from distill_jax.training.train_state import state_shardings

    abstract, shardings = state_shardings(run.model_config, run.tx, mesh, run.rules)
    state = create_train_state(run.model_config, run.tx, mesh, run.rules, cfg.seed)
    batch_sh = step.batch_shardings(mesh, run.rules)
    train_step = step.make_train_step(
        run.model,
        run.tx,
        mesh=mesh,
        rules=run.rules,
        state_shardings=shardings,
        batch_shardings=batch_sh,
        num_domains=len(run.domain_names),
        dropout_seed=1,
        dropout_prng=dropout_prng,
    )
    sums = step.zero_metric_sums(len(run.domain_names))
    state, sums = train_step(state, sums, pipeline.host_to_global(batch, batch_sh))
    return jax.tree.map(np.asarray, sums), jax.tree.map(np.asarray, state.params), state


# Pure data, pure FSDP and the three-way mix run by default; the other tensor mixes in CI's second step.
@pytest.mark.parametrize(
    "data,fsdp,tensor",
    [
        (8, 1, 1),
        (1, 8, 1),
        (2, 2, 2),
        pytest.param(2, 1, 4, marks=pytest.mark.slow),
        pytest.param(1, 2, 4, marks=pytest.mark.slow),
    ],
)
def test_sharded_step_equals_single_device(small_train_config, data, fsdp, tensor):
    cfg = small_train_config()
    cfg.model.dropout_rate = 0.0
    batch = first_train_batch(cfg)
    ref_sums, ref_params, _ = one_step(cfg, jax.devices()[:1], batch)
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = data, fsdp, tensor
    sums, params, state = one_step(cfg, jax.devices(), batch)
    np.testing.assert_allclose(sums["loss_sum"], ref_sums["loss_sum"], rtol=2e-5)
    np.testing.assert_allclose(sums["ce_sum"], ref_sums["ce_sum"], rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(sums["grad_norm_sum"], ref_sums["grad_norm_sum"], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params)
    # The parameters really are split: with fsdp or tensor > 1 some leaf holds only part of itself per device.
    if fsdp * tensor > 1:
        leaves = jax.tree.leaves(state.params)
        assert any(leaf.addressable_shards[0].data.size < leaf.size for leaf in leaves)


# Three compiled steps each (~65 s on 2 cores): CI's second step.
@pytest.mark.slow
@pytest.mark.parametrize("dropout_prng", ["rbg", "threefry2x32"])
def test_dropout_masks_do_not_depend_on_the_mesh(small_train_config, dropout_prng):
    """With dropout on, a 2 x 2 x 2 mesh draws the single device's masks: the same loss and update."""
    cfg = small_train_config(model__dropout_rate=0.3)
    batch = first_train_batch(cfg)
    ref_sums, ref_params, _ = one_step(cfg, jax.devices()[:1], batch, dropout_prng)
    # The knob changes the masks: the other implementation's step has another loss.
    other = "threefry2x32" if dropout_prng == "rbg" else "rbg"
    other_sums, _, _ = one_step(cfg, jax.devices()[:1], batch, other)
    assert abs(float(other_sums["loss_sum"]) - float(ref_sums["loss_sum"])) > 1e-3 * abs(float(ref_sums["loss_sum"]))
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 2, 2, 2
    sums, params, _ = one_step(cfg, jax.devices(), batch, dropout_prng)
    np.testing.assert_allclose(sums["loss_sum"], ref_sums["loss_sum"], rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params)
