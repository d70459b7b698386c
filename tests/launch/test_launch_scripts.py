"""launch/: argument handling, the missing-tool messages and the exact commands each script runs.

The scripts run under bash with a PATH holding only the coreutils they use plus, where a test wants
them, stub gcloud/kubectl/srun/git/distill-jax executables that record their argv (and stdin), print
one line and exit 0 - so no cloud is touched, and a tool missing from this machine's PATH can be simulated even
though the real gcloud and kubectl are installed here.
"""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import REPO

TPU_VM = os.path.join(REPO, "launch", "tpu_vm.sh")
SLURM = os.path.join(REPO, "launch", "slurm.sbatch")
GKE = os.path.join(REPO, "launch", "gke", "render.sh")
# What the scripts call besides their tools (and bash builtins).
COREUTILS = ("bash", "env", "sed", "seq", "dirname", "basename", "tee", "cat")
# A stub appends one line per call: its name, its argv shell-quoted, and the env vars the launchers set.
STUB = """#!/bin/bash
printf '%s' "$(basename "$0")" >> "$STUB_LOG"; printf ' %q' "$@" >> "$STUB_LOG"
printf ' #env DISTILL_JAX_DISTRIBUTED=%s JAX_LOCAL_DEVICE_IDS=%s\\n' "${DISTILL_JAX_DISTRIBUTED:-}" "${JAX_LOCAL_DEVICE_IDS:-}" >> "$STUB_LOG"
echo "output of $(basename "$0")"
if [ "$(basename "$0")" = kubectl ]; then cat > "$STUB_LOG.stdin"; fi
if [ "$(basename "$0")" = gcloud ] && [ "$4" = describe ]; then exit "${STUB_DESCRIBE_RC:-0}"; fi
case " $* " in *" distill-jax "*) exit "${STUB_COMMAND_RC:-0}" ;; esac
"""


@pytest.fixture
def sandbox(tmp_path):
    """run(script, *args, tools=(...), env={...}) -> (CompletedProcess, recorded calls as (tool, argv, env))."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in COREUTILS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    log = tmp_path / "calls.log"

    def run(script, *args, tools=(), env=None):
        for tool in tools:
            (bin_dir / tool).write_text(STUB)
            (bin_dir / tool).chmod(0o755)
        full_env = {"PATH": str(bin_dir), "STUB_LOG": str(log), "TMPDIR": str(tmp_path), **(env or {})}
        proc = subprocess.run(
            [shutil.which("bash"), script, *args], env=full_env, cwd=tmp_path, capture_output=True, text=True
        )
        calls = []
        for line in log.read_text().splitlines() if log.exists() else []:
            argv_part, _, env_part = line.partition(" #env ")
            tool, *argv = shlex.split(argv_part)
            calls.append((tool, argv, dict(kv.split("=", 1) for kv in env_part.split() if not kv.endswith("="))))
        log.unlink(missing_ok=True)
        return proc, calls

    run.tmp = tmp_path
    return run


def printed_commands(stdout):
    """The '+ cmd' lines a script prints (dry run or not), each split back into its argv."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


TRAIN = ["distill-jax", "train", "--config=configs/t5_small.py", "--workdir=/mnt/runs/a b"]


# --------------------------------------------------------------------------------------------- TPU VM


def test_tpu_vm_dry_run_prints_create_install_run_and_teardown(sandbox):
    proc, calls = sandbox(
        TPU_VM, "--name=my-tpu", "--zone=us-central2-b", "--project=proj", "--accelerator-type=v4-32",
        "--spot", "--teardown", "--dry-run", "--", *TRAIN,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert calls == []  # Nothing was run.
    where = ["--zone=us-central2-b", "--project=proj"]
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    archive = str(sandbox.tmp / "distill_jax-my-tpu.tar.gz")
    commands = printed_commands(proc.stdout)
    assert commands[:4] == [
        [*tpu, "create", "my-tpu", *where, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"],
        ["git", "-C", REPO, "archive", "--format=tar.gz", "--prefix=distill_jax/", "-o", archive, "HEAD"],
        [*tpu, "scp", archive, "my-tpu:distill_jax.tar.gz", *where, "--worker=all"],
        [*tpu, "ssh", "my-tpu", *where, "--worker=all",
         "--command=rm -rf distill_jax && tar -xzf distill_jax.tar.gz && "
         "python3 -m pip install --quiet 'jax[tpu]' ./distill_jax"],
    ]  # fmt: skip
    run, delete = commands[4:]
    assert run[:9] == [*tpu, "ssh", "my-tpu", *where, "--worker=all"]
    remote = run[9].removeprefix("--command=")
    prefix = "cd ~/distill_jax && export PATH=$HOME/.local/bin:$PATH DISTILL_JAX_DISTRIBUTED=1 && "
    assert remote.startswith(prefix) and shlex.split(remote.removeprefix(prefix)) == TRAIN
    assert delete == [*tpu, "delete", "my-tpu", *where, "--quiet"]
    assert "only if 'my-tpu' does not exist" in proc.stdout


def test_tpu_vm_reuses_an_existing_slice_and_tears_down_even_when_the_command_fails(sandbox):
    args = ["--name=t", "--zone=z", "--install=distill-jax==0.1", "--teardown", "--", *TRAIN]
    proc, calls = sandbox(TPU_VM, *args, tools=("gcloud",), env={"STUB_COMMAND_RC": "3"})
    assert proc.returncode == 3
    assert "reusing the existing TPU VM 't'" in proc.stderr
    assert [argv[3:5] for _, argv, _ in calls] == [["describe", "t"], ["ssh", "t"], ["ssh", "t"], ["delete", "t"]]
    assert calls[1][1][-1] == "--command=python3 -m pip install --quiet 'jax[tpu]' distill-jax==0.1"
    assert calls[2][1][-1].startswith("--command=cd ~ && ")


def test_tpu_vm_creates_a_missing_slice_and_copies_the_checkout(sandbox):
    args = ["--name=t", "--zone=z", "--accelerator-type=v6e-16", f"--log={sandbox.tmp}/run.log", "--", *TRAIN]
    proc, calls = sandbox(TPU_VM, *args, tools=("gcloud", "git"), env={"STUB_DESCRIBE_RC": "1"})
    assert proc.returncode == 0, proc.stderr
    assert [(tool, argv[3] if tool == "gcloud" else argv[2]) for tool, argv, _ in calls] == [
        ("gcloud", "describe"),
        ("gcloud", "create"),
        ("git", "archive"),
        ("gcloud", "scp"),
        ("gcloud", "ssh"),
        ("gcloud", "ssh"),
    ]
    assert "--version=v2-alpha-tpuv6e" in calls[1][1]
    assert printed_commands(proc.stdout) == [argv_of(call) for call in calls[1:]]
    log = (sandbox.tmp / "run.log").read_text().splitlines()  # --log gets the streamed run, and only that.
    assert log[0].startswith("+ gcloud compute tpus tpu-vm ssh t") and log[1:] == ["output of gcloud"]


def argv_of(call):
    tool, argv, _ = call
    return [tool, *argv]


@pytest.mark.parametrize(
    "args,env,message",
    [
        (["--zone=z", "--", "distill-jax"], {}, "no TPU VM name: pass --name=NAME or set TPU_NAME"),
        (["--name=t", "--", "distill-jax"], {}, "no zone: pass --zone=ZONE or set ZONE"),
        (["--name=t", "--zone=z"], {}, "no command given"),
        (["--name=t", "--zone=z", "--frobnicate", "--", "x"], {}, "unknown option '--frobnicate'"),
        (["--", "distill-jax"], {"TPU_NAME": "t"}, "no zone"),  # The name came from the environment.
        (["--name=t", "--zone=z", "--", "distill-jax"], {}, "gcloud not found on PATH"),
        (["--name=t", "--zone=z", "--accelerator-type=v9-8", "--dry-run", "--", "x"], {}, "pass --version=VERSION"),
    ],
)
def test_tpu_vm_refuses_with_a_clear_message(sandbox, args, env, message):
    proc, calls = sandbox(TPU_VM, *args, env=env)
    assert proc.returncode == 2 and message in proc.stderr and calls == []


def test_tpu_vm_needs_an_accelerator_type_to_create(sandbox):
    args = ["--name=t", "--zone=z", "--install=distill-jax", "--", "x"]
    proc, calls = sandbox(TPU_VM, *args, tools=("gcloud",), env={"STUB_DESCRIBE_RC": "1"})
    assert proc.returncode == 2 and "does not exist in z; pass --accelerator-type" in proc.stderr
    assert [argv[3] for _, argv, _ in calls] == ["describe"]


def test_tpu_vm_without_git_needs_install_spec(sandbox):
    proc, _ = sandbox(TPU_VM, "--name=t", "--zone=z", "--", "x", tools=("gcloud",))
    assert proc.returncode == 2 and "git not found on PATH" in proc.stderr


# ---------------------------------------------------------------------------------------------- SLURM


@pytest.mark.parametrize(
    "env,prefix",
    [
        ({}, ["env", "DISTILL_JAX_DISTRIBUTED=1", "srun", "--label", "--kill-on-bad-exit=1"]),
        (
            {"PER_NODE": "1", "SLURM_GPUS_ON_NODE": "4"},
            [
                "env",
                "DISTILL_JAX_DISTRIBUTED=1",
                "JAX_LOCAL_DEVICE_IDS=0,1,2,3",
                "srun",
                "--label",
                "--kill-on-bad-exit=1",
                "--ntasks-per-node=1",
            ],
        ),  # fmt: skip
    ],
)
def test_slurm_dry_run_prints_the_srun_command(sandbox, env, prefix):
    proc, calls = sandbox(SLURM, *TRAIN, env={"DRY_RUN": "1", **env})
    assert proc.returncode == 0, proc.stderr
    assert printed_commands(proc.stdout) == [prefix + TRAIN] and calls == []


def test_slurm_runs_one_srun_step_with_distributed_auto_detection(sandbox):
    proc, calls = sandbox(SLURM, *TRAIN, tools=("srun", "distill-jax"), env={"SLURM_JOB_ID": "7"})
    assert proc.returncode == 0, proc.stderr
    assert calls == [("srun", ["--label", "--kill-on-bad-exit=1", *TRAIN], {"DISTILL_JAX_DISTRIBUTED": "1"})]


@pytest.mark.parametrize(
    "args,tools,env,message",
    [
        ([], (), {"SLURM_JOB_ID": "7"}, "no command given"),
        (TRAIN, ("srun", "distill-jax"), {}, "not inside a SLURM allocation"),
        (TRAIN, ("distill-jax",), {"SLURM_JOB_ID": "7"}, "srun not found on PATH"),
        (TRAIN, ("srun",), {"SLURM_JOB_ID": "7"}, "'distill-jax' not found on PATH"),
        (TRAIN, ("srun",), {"SLURM_JOB_ID": "7", "VENV": "/nonexistent"}, "VENV=/nonexistent has no bin/activate"),
    ],
)
def test_slurm_refuses_with_a_clear_message(sandbox, args, tools, env, message):
    proc, calls = sandbox(SLURM, *args, tools=tools, env=env)
    assert proc.returncode == 2 and message in proc.stderr and calls == []


# ------------------------------------------------------------------------------------------------ GKE

GKE_TPU = ["--name=run1", "--image=reg/distill:1", "--workers=4", "--tpu=tpu-v5-lite-podslice", "--topology=4x4"]


def pod_spec(rendered):
    jobset = yaml.safe_load(rendered)
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and jobset["kind"] == "JobSet"
    job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 4 and job["completionMode"] == "Indexed"
    return jobset, job["template"]["spec"]


def test_gke_renders_a_tpu_jobset(sandbox):
    proc, calls = sandbox(GKE, *GKE_TPU, "--pvc=shared-fs", "--", *TRAIN)
    assert proc.returncode == 0, proc.stderr
    jobset, pod = pod_spec(proc.stdout)
    assert jobset["metadata"] == {
        "name": "run1",
        "annotations": {"alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"},
    }
    assert jobset["spec"]["network"] == {"enableDNSHostnames": True}
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "4x4",
    }
    (container,) = pod["containers"]
    assert container["image"] == "reg/distill:1" and container["command"] == ["bash", "-c"]
    assert shlex.split(container["args"][0]) == [*TRAIN, "--num_processes=4", "--process_id=$JOB_COMPLETION_INDEX"]
    assert container["env"] == [{"name": "JAX_COORDINATOR_ADDRESS", "value": "run1-workers-0-0.run1:8482"}]
    assert container["resources"] == {"limits": {"google.com/tpu": 4}}
    assert container["securityContext"] == {"privileged": True}
    assert {"name": "shared", "mountPath": "/shared"} in container["volumeMounts"]
    assert {"name": "shared", "persistentVolumeClaim": {"claimName": "shared-fs"}} in pod["volumes"]
    assert calls == []


def test_gke_renders_a_gpu_jobset_without_tpu_fields(sandbox):
    args = ["--name=run1", "--image=img", "--workers=4", "--gpu=nvidia-h100-80gb", "--gpus=8", "--", *TRAIN]
    proc, _ = sandbox(GKE, *args)
    assert proc.returncode == 0, proc.stderr
    jobset, pod = pod_spec(proc.stdout)
    assert "annotations" not in jobset["metadata"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    (container,) = pod["containers"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    assert "securityContext" not in container and [p["containerPort"] for p in container["ports"]] == [8482]
    assert [v["name"] for v in pod["volumes"]] == ["dshm"]


def test_gke_command_quoting_survives_yaml_and_bash(sandbox):
    tricky = ["distill-jax", "train", '--config.prepare.target_template={rationale} "So" \\ it is {target}.']
    proc, _ = sandbox(GKE, *GKE_TPU, "--", *tricky)
    _, pod = pod_spec(proc.stdout)
    script = pod["containers"][0]["args"][0]
    # Run the pod's bash -c line with echo in front: bash must see exactly the original argv.
    echoed = subprocess.run(
        [shutil.which("bash"), "-c", 'printf "%s\\n" ' + script],
        env={"JOB_COMPLETION_INDEX": "2"},
        capture_output=True,
        text=True,
    )
    assert echoed.stdout.splitlines() == [*tricky, "--num_processes=4", "--process_id=2"]


def test_gke_apply_pipes_the_yaml_to_kubectl(sandbox):
    proc, calls = sandbox(GKE, *GKE_TPU, "--apply", "--", *TRAIN, tools=("kubectl",))
    assert proc.returncode == 0, proc.stderr
    assert [argv_of(c) for c in calls] == [["kubectl", "apply", "-f", "-"]]
    pod_spec((sandbox.tmp / "calls.log.stdin").read_text())
    assert proc.stdout == "output of kubectl\n"  # kubectl's own output only: the YAML went to its stdin.
    assert "kubectl logs -f -l jobset.sigs.k8s.io/jobset-name=run1" in proc.stderr


def test_gke_apply_dry_run_prints_the_yaml_and_the_command(sandbox):
    proc, calls = sandbox(GKE, *GKE_TPU, "--apply", "--dry-run", "--", *TRAIN)
    assert proc.returncode == 0 and calls == []
    pod_spec(proc.stdout)
    assert "+ kubectl apply -f -" in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (GKE_TPU, "no command given"),
        (GKE_TPU[1:] + ["--", "x"], "no JobSet name"),
        (["--name=Run_1", *GKE_TPU[1:], "--", "x"], "is not a DNS label"),
        ([GKE_TPU[0], *GKE_TPU[2:], "--", "x"], "no container image"),
        ([*GKE_TPU[:2], *GKE_TPU[3:], "--", "x"], "pass --workers=N"),
        ([*GKE_TPU[:3], "--", "x"], "pass exactly one of --tpu=TYPE"),
        ([*GKE_TPU, "--gpu=nvidia-l4", "--", "x"], "pass exactly one of --tpu=TYPE"),
        ([*GKE_TPU[:4], "--", "x"], "--tpu needs --topology"),
        ([*GKE_TPU, "--apply", "--", "x"], "kubectl not found on PATH"),
    ],
)
def test_gke_refuses_with_a_clear_message(sandbox, args, message):
    proc, calls = sandbox(GKE, *args)
    assert proc.returncode == 2 and message in proc.stderr and calls == []


# ------------------------------------------------------------------------------------- the receiving end


def test_distributed_env_var_initialises_jax_from_the_cluster_environment(tmp_path):
    """What the launchers rely on: DISTILL_JAX_DISTRIBUTED=1 and no flags -> jax.distributed via SLURM's variables."""
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "1"}
    slurm |= {"SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"DISTILL_JAX_DISTRIBUTED": "1", **slurm}
    command = [sys.executable, "-m", "distill_jax.cli.main", "train", f"--workdir={tmp_path}"]
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    # It initialised (one SLURM process), then stopped at the missing data, as any run without data would.
    assert "jax.distributed: process 0 of 1" in proc.stderr, proc.stderr[-2000:]
    assert "data.train_dir is not set" in proc.stderr


@pytest.mark.parametrize("script", [TPU_VM, GKE])
def test_help_prints_the_documented_flags(sandbox, script):
    proc, _ = sandbox(script, "--help")
    assert proc.returncode == 2 and "# Usage: launch/" in proc.stdout and "--dry-run" in proc.stdout
    assert all(line.startswith("#") for line in proc.stdout.splitlines())
