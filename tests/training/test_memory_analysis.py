"""The start-up memory line: XLA's analysis of the compiled train step, per device, in human units."""

import re

import jax
import numpy as np

from distill_jax.data import pipeline
from distill_jax.training import memory, step
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state


def test_compiled_step_reports_its_per_device_memory_and_runs(small_train_config):
    cfg = small_train_config(mesh__data=1, mesh__fsdp=8)
    run = setup_run(cfg)
    train_step = step.make_train_step(
        run.model,
        run.tx,
        mesh=run.mesh,
        rules=run.rules,
        state_shardings=run.shardings,
        batch_shardings=run.batch_shardings,
        num_domains=len(run.domain_names),
        dropout_seed=1,
    )
    compiled = train_step.compile(run.abstract_state, step.batch_spec(16, 64, 96, run.batch_shardings))
    footprint = memory.memory_footprint(compiled)

    assert set(footprint) == {"arguments", "outputs", "aliased", "temp", "generated_code", "total"}
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(run.abstract_state))
    # Per device: with fsdp=8 each holds ~1/8 of the state (plus small replicated leaves and its batch rows).
    assert state_bytes / 8 < footprint["arguments"] < state_bytes / 4
    assert 0 < footprint["aliased"] <= footprint["outputs"]  # Donated state is updated in place.
    assert footprint["temp"] > 0 and footprint["generated_code"] >= 0
    assert (
        footprint["total"]
        == (footprint["arguments"] + footprint["outputs"] - footprint["aliased"] + footprint["temp"])
        + footprint["generated_code"]
    )
    line = memory.memory_line(footprint)
    assert re.fullmatch(
        r"train step memory per device \(XLA memory analysis\): total \d+\.\d\d MiB = arguments \d+\.\d\d MiB, "
        r"outputs \d+\.\d\d MiB, aliased \d+\.\d\d MiB, temp \d+\.\d\d MiB, generated_code \d+(\.\d\d KiB| B)",
        line,
    ), line

    # The executable the trainer runs is this one: it takes real arrays and steps.
    state = create_train_state(run.model_config, run.tx, run.mesh, run.rules, cfg.seed)
    batch = {k: np.ones(s.shape, s.dtype) for k, s in step.batch_spec(16, 64, 96, run.batch_shardings).items()}
    state, sums = compiled(
        state,
        step.zero_metric_sums(len(run.domain_names), run.mesh),
        pipeline.host_to_global(batch, run.batch_shardings),
    )
    assert int(state.step) == 1 and float(sums["steps"]) == 1.0


def test_human_bytes():
    assert [memory.human_bytes(n) for n in (0, 1023, 1024, 3 * 2**20 + 2**19, 5 * 2**40)] == [
        "0 B",
        "1023 B",
        "1.00 KiB",
        "3.50 MiB",
        "5.00 TiB",
    ]
    assert memory.memory_line({}) == "train step memory: not reported by this backend"
