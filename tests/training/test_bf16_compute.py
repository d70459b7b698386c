"""`model.dtype = "bfloat16"` is one switch: every matmul of the train step's forward and backward runs in
bf16, while the loss, the softmax statistics, the parameters, their gradients and the optimizer stay float32.

Read from the traced step (the jaxpr of the loss's gradient), not from the module code, so a new layer
that forgets its cast fails here.
"""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from distill_jax.models.family import init_params, model_for, preset_config
from distill_jax.models.seq2seq import Seq2SeqModel, cross_entropy_with_z_loss

B, S, T = 2, 12, 10


def _equations(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in it (jit, remat, scan, custom rules)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _equations(sub)


def _loss_and_grad_jaxpr(config):
    model = Seq2SeqModel(model_for(config))
    params = nn.unbox(init_params(config, jax.random.key(0)))
    rng = np.random.default_rng(0)
    batch = {
        "encoder_input_tokens": jnp.asarray(rng.integers(2, 50, (B, S)), jnp.int32),
        "decoder_target_tokens": jnp.asarray(rng.integers(2, 50, (B, T)), jnp.int32),
    }

    def loss(p):
        logits = model.logits(p, batch, enable_dropout=False)
        per_token, _ = cross_entropy_with_z_loss(logits, batch["decoder_target_tokens"], z_loss=1e-4)
        return jnp.mean(per_token), logits

    grad_fn = jax.value_and_grad(loss, has_aux=True)
    return jax.make_jaxpr(grad_fn)(params), params, grad_fn


@pytest.mark.parametrize("size", ["tiny", "bart-tiny"])
def test_bf16_switch_puts_every_matmul_in_bf16_and_keeps_the_statistics_float32(size):
    config = preset_config(size, dtype="bfloat16", dropout_rate=0.0)
    jaxpr, params, grad_fn = _loss_and_grad_jaxpr(config)
    equations = list(_equations(jaxpr.jaxpr))

    matmul_inputs = Counter(
        tuple(str(v.aval.dtype) for v in eqn.invars) for eqn in equations if eqn.primitive.name == "dot_general"
    )
    assert matmul_inputs and set(matmul_inputs) == {("bfloat16", "bfloat16")}, matmul_inputs

    # The softmaxes (attention weights) and the log-softmax and z-loss of the loss: their max and log run
    # on float32 values. (exp is not checked: exact GELU's derivative takes one in the compute dtype.)
    statistics = Counter(
        (eqn.primitive.name, str(eqn.invars[0].aval.dtype))
        for eqn in equations
        if eqn.primitive.name in ("reduce_max", "log")
    )
    assert statistics and all(dtype == "float32" for _, dtype in statistics), statistics

    (loss, logits), grads = jax.jit(grad_fn)(params)
    assert loss.dtype == jnp.float32 and logits.dtype == jnp.float32 and np.isfinite(float(loss))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    optimizer = optax.adamw(1e-3)
    updates, opt_state = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
    assert {leaf.dtype for leaf in jax.tree.leaves((updates, opt_state)) if leaf.ndim} == {jnp.dtype(jnp.float32)}


def test_float32_default_runs_no_bf16():
    jaxpr, _, _ = _loss_and_grad_jaxpr(preset_config("tiny", dropout_rate=0.0))
    dtypes = {str(v.aval.dtype) for eqn in _equations(jaxpr.jaxpr) for v in eqn.outvars}
    assert "bfloat16" not in dtypes
