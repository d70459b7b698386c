"""Checkpoints on object storage against real servers: save, resume and retention on s3:// (moto) and gs://
(fake-gcs-server, tensorstore's gcs driver), and a killed writer on s3."""

import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.retention import RECORD_FILE
from distill_jax.training.train_state import TrainState

META = {"model": {}, "domain_names": ["a"], "mixture_weights": {"a": 1.0}}


def _state_at(step, n=1000):
    params = {"w": jax.random.normal(jax.random.key(step), (n,)), "b": jnp.full((3,), float(step))}
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=())


def _abstract(n=1000):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state_at(0, n))


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_checkpoints_save_restore_and_retain_on_object_storage(scheme, request):
    server = request.getfixturevalue("s3_server" if scheme == "s3" else "gcs_emulator")
    bucket = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    url = f"{scheme}://{bucket}/run/checkpoints"
    c = Checkpointer(url, keep_last=2)
    for step in (1, 2, 3):
        c.save(step, _state_at(step), {"next_index": step}, META)
    c.close()
    keys = server.keys(bucket)
    assert {k.split("/")[2] for k in keys} == {"2", "3", RECORD_FILE}  # Step 1 deleted by retention.
    assert "run/checkpoints/3/commit_success.txt" in keys  # The marker that makes a step final there.
    restored = Checkpointer(url).restore_latest(_abstract())
    assert restored.step == 3
    np.testing.assert_array_equal(restored.state.params["w"], _state_at(3).params["w"])
    assert restored.data == {"per_process": [{"next_index": 3}]}
    params_only = Checkpointer(url).restore_latest(_abstract(), params_only=True)
    assert params_only.step == 3 and params_only.state.opt_state is None
    np.testing.assert_array_equal(params_only.state.params["w"], _state_at(3).params["w"])


_WRITER = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    from distill_jax.training.checkpoints import Checkpointer
    from distill_jax.training.train_state import TrainState
    def state_at(step, n):
        params = {"w": jax.random.normal(jax.random.key(step), (n,)), "b": jnp.full((3,), float(step))}
        return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=())
    META = {"model": {}, "domain_names": ["a"], "mixture_weights": {"a": 1.0}}
    c = Checkpointer(sys.argv[1], async_save=False)
    c.save(1, state_at(1, 1000), {"next_index": 1}, META)
    print("saved 1", flush=True)
    c.save(2, state_at(2, 20_000_000), {"next_index": 2}, META)  # 80 MB: killed while it uploads
    print("saved 2", flush=True)
    """
)


def test_a_writer_killed_mid_save_leaves_no_step_a_resume_takes_for_complete(s3_server, s3_bucket, tmp_path):
    url = f"s3://{s3_bucket}/run/checkpoints"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "saved 1"
        deadline = time.monotonic() + 60
        while not any(k.startswith("run/checkpoints/2/") for k in s3_server.keys(s3_bucket)):
            assert writer.poll() is None and time.monotonic() < deadline, "step 2 never started writing"
            time.sleep(0.05)
        writer.kill()  # SIGKILL: no handler, no cleanup, objects of step 2 half written
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
    step2 = [k for k in s3_server.keys(s3_bucket) if k.startswith("run/checkpoints/2/")]
    assert step2 and "run/checkpoints/2/commit_success.txt" not in step2  # Really killed mid-save.
    reader = Checkpointer(url)
    assert reader.all_steps() == [1]
    restored = reader.restore_latest(_abstract())
    assert restored.step == 1 and restored.data == {"per_process": [{"next_index": 1}]}
