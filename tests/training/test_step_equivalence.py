"""Gradient accumulation, rematerialisation and scanned layers change how a step runs, not what it computes.

Every variant takes one SGD step (learning rate 1, so the update *is* the gradient) from the same
weights on the same batch over a 2 x 2 x 2 mesh of the 8 virtual devices, and must reach the plain
step's parameters and metric sums. Dropout is off: microbatches and scanned layers draw their own masks.
"""

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from helpers import first_train_batch

from distill_jax.data import pipeline
from distill_jax.models.encoder_decoder import stack_layers, unstack_layers
from distill_jax.models.family import init_params
from distill_jax.presets import demo_config
from distill_jax.training import step
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import TrainState, state_shardings

SGD = optax.sgd(1.0)


def make_config(train_dir, **model):
    cfg = demo_config()
    cfg.data.train_dir = train_dir
    cfg.data.max_input_len, cfg.data.max_target_len = 64, 96
    cfg.model.update(model)
    return cfg


@pytest.fixture(scope="module")
def batch(demo_prepared):
    return first_train_batch(make_config(demo_prepared["train"]))


def one_sgd_step(cfg, batch, host_params, grad_accum_steps=1):
    """(metric sums, updated params in the per-layer layout) after one SGD step from `host_params`."""
    cfg.model.dropout_rate = 0.0
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 2, 2, 2
    run = setup_run(cfg)
    _, shardings = state_shardings(run.model_config, SGD, run.mesh, run.rules)
    if run.model_config.scan_layers:
        host_params = stack_layers(host_params, run.model_config)
    params = jax.device_put(host_params, shardings.params)
    state = jax.jit(
        lambda p: TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=p, opt_state=SGD.init(p)),
        out_shardings=shardings,
    )(params)
    train_step = step.make_train_step(
        run.model,
        SGD,
        mesh=run.mesh,
        rules=run.rules,
        state_shardings=shardings,
        batch_shardings=run.batch_shardings,
        num_domains=len(run.domain_names),
        dropout_seed=1,
        z_loss=1e-4,
        grad_accum_steps=grad_accum_steps,
    )
    sums = step.zero_metric_sums(len(run.domain_names), run.mesh)
    state, sums = train_step(state, sums, pipeline.host_to_global(batch, run.batch_shardings))
    params = jax.tree.map(np.asarray, state.params)
    if run.model_config.scan_layers:
        params = unstack_layers(params, run.model_config)
    return jax.tree.map(np.asarray, sums), params


def initial_params(cfg):
    model_config = dataclasses.replace(setup_run(cfg).model_config, scan_layers=False)
    return jax.tree.map(np.asarray, nn.unbox(init_params(model_config, jax.random.key(0))))


def assert_same_step(got, want, host_params):
    (sums, params), (ref_sums, ref_params) = got, want
    assert set(sums) == set(ref_sums)
    for key in sums:
        np.testing.assert_allclose(sums[key], ref_sums[key], rtol=2e-5, atol=1e-4, err_msg=key)
    # params = initial - gradient: compare the gradients themselves.
    grads = jax.tree.map(np.subtract, host_params, params)
    ref_grads = jax.tree.map(np.subtract, host_params, ref_params)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads)) > 1e-3  # A real update happened.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6), grads, ref_grads)


@pytest.fixture(scope="module")
def plain(demo_prepared, batch):
    cfg = make_config(demo_prepared["train"])
    host_params = initial_params(cfg)
    return host_params, one_sgd_step(cfg, batch, host_params)


@pytest.mark.parametrize(
    "variant",
    [
        dict(grad_accum_steps=2),
        dict(grad_accum_steps=4),
        dict(remat="full"),
        dict(remat="dots_saveable"),
        dict(scan_layers=True),
        dict(scan_layers=True, remat="dots_saveable", grad_accum_steps=2),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_variant_gives_the_plain_gradients_and_sums(demo_prepared, batch, plain, variant):
    host_params, reference = plain
    cfg = make_config(demo_prepared["train"], **{k: v for k, v in variant.items() if k != "grad_accum_steps"})
    got = one_sgd_step(cfg, batch, host_params, variant.get("grad_accum_steps", 1))
    assert_same_step(got, reference, host_params)


def test_accumulation_with_lora_sums_adapter_gradients_and_leaves_the_base(demo_prepared, batch):
    lora = dict(lora_rank=4, lora_dropout=0.0)
    host_params = initial_params(make_config(demo_prepared["train"], **lora))
    # B != 0, so the adapters' A matrices get gradients too.
    host_params = jax.tree_util.tree_map_with_path(
        lambda path, x: np.full_like(x, 0.01) if "lora_b" in jax.tree_util.keystr(path) else x, host_params
    )
    reference = one_sgd_step(make_config(demo_prepared["train"], **lora), batch, host_params)
    got = one_sgd_step(make_config(demo_prepared["train"], **lora), batch, host_params, grad_accum_steps=2)
    assert_same_step(got, reference, host_params)
    before, after = (
        {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
        for tree in (host_params, got[1])
    )
    frozen = [k for k in before if "lora" not in k]
    assert frozen and all(np.array_equal(before[k], after[k]) for k in frozen)


def test_batch_that_does_not_split_into_microbatches_is_a_clear_error(demo_prepared, batch, plain):
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        one_sgd_step(make_config(demo_prepared["train"]), batch, plain[0], grad_accum_steps=3)
