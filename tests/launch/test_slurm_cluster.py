"""launch/slurm.sbatch on a real one-node SLURM cluster (Debian's slurm-wlm 22.05 + munge), not stub tools.

The test starts munged, slurmctld and slurmd itself, everything under tmp_path (key, socket, spool,
logs, a slurm.conf on free ports; the system's /etc is not touched), and stops them by PID. A 2-task
training job is requeued mid-run (`scontrol requeue`: SLURM sends SIGTERM to every task); both tasks
must save the same step, the requeued job must resume from it and finish, and its parameters must equal
an uninterrupted 2-process run (launch/local.sh, the same 2 x 4 CPU devices) bit for bit.
Needs root and the slurm-wlm and munge packages (apt-get install -y slurm-wlm munge); skipped otherwise.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import REPO
from object_store import free_port

from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import setup_run

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


def _wait(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {seconds} s")
        time.sleep(1)


@pytest.fixture
def slurm_cluster(tmp_path):
    """(env for sbatch/squeue/scontrol with SLURM_CONF set, tmp dir) of a running one-node cluster."""
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS):
        pytest.skip("needs root and slurm-wlm + munge (apt-get install -y slurm-wlm munge)")
    root = tmp_path / "slurm"
    for sub in ("munge", "ctld", "d", "log"):
        (root / sub).mkdir(parents=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (root / "munge").chmod(0o755)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=distilltest",
                f"SlurmctldHost={host}",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "SlurmUser=root",
                "AuthType=auth/munge",
                f"AuthInfo=socket={root}/munge/sock",
                "CredType=cred/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                f"StateSaveLocation={root}/ctld",
                f"SlurmdSpoolDir={root}/d",
                f"SlurmctldPidFile={root}/ctld.pid",
                f"SlurmdPidFile={root}/d.pid",
                f"SlurmctldLogFile={root}/log/ctld.log",
                f"SlurmdLogFile={root}/log/d.log",
                "JobRequeue=1",
                "KillWait=60",  # the seconds between SIGTERM and SIGKILL: the tasks save in them
                "MpiDefault=none",
                "ReturnToService=2",
                f"NodeName={host} CPUs={os.cpu_count()} RealMemory=8000 State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    log = open(root / "log" / "daemons.out", "wb")
    daemons = [
        subprocess.Popen(
            ["munged", "-F", "--force", f"--socket={root}/munge/sock", f"--key-file={key}"]
            + [f"--log-file={root}/log/munged.log", f"--pid-file={root}/munge/pid", f"--seed-file={root}/munge/seed"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        _wait(lambda: (root / "munge" / "sock").exists(), 30, "munged did not start")
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(
                subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=log, stderr=subprocess.STDOUT)
            )

        def idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() == "idle"

        _wait(idle, 60, f"the node was not idle (see {root}/log)")
        yield env, tmp_path
    finally:
        for daemon in reversed(daemons):
            if daemon.poll() is None:
                daemon.terminate()
                try:
                    daemon.wait(20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(10)
        log.close()


def _train_args(workdir, train_dir, steps):
    overrides = {
        "data.train_dir": train_dir,
        "data.max_input_len": 64,
        "data.max_target_len": 96,
        "train.batch_size": 16,
        "train.steps": steps,
        "train.log_every": 4,
        "train.checkpoint_every": 4,
        "eval.every": 0,
    }
    config = os.path.join(REPO, "distill_jax", "presets.py") + ":demo"
    return ["train", f"--config={config}", f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in overrides.items()]]


def _params(cfg, workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, _, _ = ckpt.restore(ckpt.latest_step(), setup_run(cfg).abstract_state)
    ckpt.close()
    return int(state.step), jax.tree.map(np.asarray, state.params)


@pytest.mark.slow  # ~6 min: a requeued job waits SLURM's fixed 2 minutes before it runs again
def test_a_requeued_two_task_job_saves_an_agreed_step_and_resumes_bit_for_bit(
    slurm_cluster, demo_prepared, small_train_config
):
    env, tmp = slurm_cluster
    venv = os.path.dirname(os.path.dirname(sys.executable))
    job_env = {**env, "VENV": venv, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    run, steps = tmp / "run", 40
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--time=30"]
        + [f"--output={tmp}/job-%j.out", os.path.join(REPO, "launch", "slurm.sbatch"), "distill-jax"]
        + _train_args(run, demo_prepared["train"], steps),
        env=job_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    _wait(lambda: (run / "checkpoints" / "4").is_dir(), 300, "no checkpoint 4")
    requeue = subprocess.run(["scontrol", "requeue", job], env=env, capture_output=True, text=True, timeout=30)
    assert requeue.returncode == 0, requeue.stderr

    def finished():
        out = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() == ""

    _wait(finished, 600, "the requeued job did not finish")
    output = (tmp / f"job-{job}.out").read_text()
    agreed = {task: re.findall(rf"(?m)^{task}: .*every process saves at step (\d+)", output) for task in ("0", "1")}
    assert agreed["0"] and agreed["0"] == agreed["1"], output[-3000:]
    preempted_at = int(agreed["0"][0])
    assert 4 <= preempted_at < steps
    for task in ("0", "1"):
        assert re.search(rf"(?m)^{task}: .*Resumed from .* at step {preempted_at}\.", output), output[-3000:]

    straight = tmp / "straight"
    local = subprocess.run(
        [os.path.join(REPO, "launch", "local.sh"), "-n", "2", "-d", "4", "-p", str(free_port()), "--"]
        + [os.path.join(venv, "bin", "distill-jax"), *_train_args(straight, demo_prepared["train"], steps)],
        cwd=REPO,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    cfg = small_train_config()
    step_a, a = _params(cfg, str(run))
    step_b, b = _params(cfg, str(straight))
    assert step_a == step_b == steps
    jax.tree.map(np.testing.assert_array_equal, a, b)
