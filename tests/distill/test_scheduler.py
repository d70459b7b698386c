"""The stage scheduler end to end on the generated corpus with the program teacher: budget, quotas,
purchases, resume after kill -9, and the report."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from distill_jax.data.demo_corpus import write_demo_corpus
from distill_jax.distill.scheduler import run_distillation
from distill_jax.presets import demo_config
from distill_jax.training.checkpoints import Checkpointer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_demo_corpus(str(tmp_path_factory.mktemp("bd_corpus")), seed=0, num_train=800, num_test_per_domain=6)


def _config(corpus, **distill):
    c = demo_config()
    c.data.max_input_len, c.data.max_target_len = 64, 96
    c.train.batch_size = 16
    c.train.log_every = 5
    c.train.checkpoint_every = 5
    c.eval.batch_size = 16
    c.eval.max_examples_per_domain = 6
    c.eval.decode_examples_per_domain = 2
    c.eval.max_decode_len = 16
    c.teacher.kind = "program"
    c.distill.pool = corpus["train"]
    c.distill.eval_data = corpus["test"]
    c.distill.pool_fields.update(dict(id="id", domain="domain", input="input", answer="target", rationale="rationale"))
    c.distill.budget = 120
    c.distill.stages = 2
    c.distill.methods = "random,adaptive"
    c.distill.epochs_per_stage = 0.0
    c.distill.min_steps_per_stage = 4
    c.distill.ifd_max_candidates = 8
    c.distill.ifd_max_new_tokens = 8
    c.distill.ifd_batch_size = 16
    c.distill.request_chunk = 16
    for k, v in distill.items():
        c.distill[k] = v
    return c


def _purchases(method_dir, stages):
    out = []
    for i in range(stages):
        with open(os.path.join(method_dir, f"stage_{i}", "purchased.jsonl")) as f:
            out.append([json.loads(line) for line in f])
    return out


def test_stages_spend_the_budget_as_planned(corpus, tmp_path):
    # Naive balancing: 150 per stage is 15 per domain, more than the far tail's 12 pool rows.
    cfg = _config(corpus, methods="naive", budget=300)
    workdir = str(tmp_path / "run")
    report = run_distillation(cfg, workdir)
    m = report["methods"]["naive"]
    assert m["phase"] == "done" and m["ledger"]["spent"] == cfg.distill.budget
    assert [s["stage"] for s in m["stages"]] == [0, 1]
    with open(os.path.join(workdir, "naive", "ledger.jsonl")) as f:
        reserved = [json.loads(line) for line in f if '"sent"' in line]
    assert len(reserved) == len({r["key"] for r in reserved}) == m["ledger"]["spent"]  # One charge per request.
    for stage in m["stages"]:
        counts = stage["domains"]
        assert {d["quota"] for d in counts.values()} == {15}
        for dom, d in counts.items():
            assert d["annotated"] + d["synthesized"] == d["quota"]  # The program teacher drops nothing.
            assert (
                (d["synthesized"] > 0)
                == (d["role"] == "tail")
                == (report["pool_sizes"][dom] < 15 * (stage["stage"] + 1))
            )
    assert set(m["stages"][-1]["per_domain"]) == set(report["pool_sizes"])  # Every domain evaluated.
    assert [s["selection"] for s in m["stages"]] == ["random", "ifd"]
    assert all(d["ifd_selected"] == 15 for d in m["stages"][1]["domains"].values() if d["role"] == "head")
    purchases = _purchases(os.path.join(workdir, "naive"), 2)
    ids = [r["id"] for stage in purchases for r in stage]
    assert len(ids) == len(set(ids))  # Nothing bought twice.
    head = {d for d, v in m["stages"][1]["domains"].items() if v["role"] == "head"}
    assert head and all(("ifd" in r["meta"]) == (r["domain"] in head) for r in purchases[1])
    # The scheduler state is in the training checkpoint's meta, next to the model.
    checkpointer = Checkpointer(os.path.join(workdir, "naive", "train", "checkpoints"))
    meta = checkpointer.restore_meta(checkpointer.latest_step())
    checkpointer.close()
    assert meta["scheduler"]["method"] == "naive" and meta["scheduler"]["stage"] == 1
    for path in ("report.json", "report.md", "distill_curves.png"):
        assert os.path.getsize(os.path.join(workdir, path)) > 0
    # Re-running a finished workdir buys nothing and changes nothing.
    ledger = os.path.join(workdir, "naive", "ledger.jsonl")
    before = open(ledger).read()
    again = run_distillation(cfg, workdir)
    assert open(ledger).read() == before
    assert again["methods"]["naive"]["stages"][1]["summary"] == report["methods"]["naive"]["stages"][1]["summary"]


def test_budget_smaller_than_a_stage_is_never_exceeded(corpus, tmp_path):
    cfg = _config(corpus, budget=7, methods="random", stages=1)
    report = run_distillation(cfg, str(tmp_path / "run"))
    m = report["methods"]["random"]
    assert m["ledger"]["spent"] == 7
    assert sum(s["domains"][d]["quota"] for s in m["stages"] for d in s["domains"]) == 7


_RUN = """
import sys
from distill_jax.presets import demo_config
sys.path.insert(0, {testdir!r})
from test_scheduler import _config
from distill_jax.distill.scheduler import run_distillation
run_distillation(_config({corpus!r}, methods="adaptive"), {workdir!r})
"""


def _run_script(corpus, workdir):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    code = _RUN.format(testdir=os.path.dirname(__file__), corpus=corpus, workdir=workdir)
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(corpus, tmp_path):
    reference = str(tmp_path / "reference")
    assert _run_script(corpus, reference).wait(timeout=900) == 0
    killed = str(tmp_path / "killed")
    proc = _run_script(corpus, killed)
    # Kill during stage 1: after its purchases, while preparing or training on them.
    marker = os.path.join(killed, "adaptive", "stage_1", "purchased.jsonl")
    deadline = time.time() + 900
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _run_script(corpus, killed).wait(timeout=900) == 0
    with open(os.path.join(reference, "adaptive", "scheduler_state.json")) as f:
        want = json.load(f)
    with open(os.path.join(killed, "adaptive", "scheduler_state.json")) as f:
        got = json.load(f)
    assert got["ledger"]["spent"] == want["ledger"]["spent"] <= 120
    for a, b in zip(got["stages"], want["stages"]):
        assert a["quotas"] == b["quotas"] and a["annotate"] == b["annotate"] and a["synthesize"] == b["synthesize"]
        assert a["eval"]["step"] == b["eval"]["step"]
        for d, values in b["eval"]["per_domain"].items():
            assert a["eval"]["per_domain"][d] == pytest.approx(values, rel=1e-5, abs=1e-6)
    assert _purchases(os.path.join(killed, "adaptive"), 2) == _purchases(os.path.join(reference, "adaptive"), 2)


def test_restarted_stages_train_their_own_steps_and_schedule(corpus, tmp_path):
    """stage_init=restart: each stage's run starts at step 0 in stage_i/train with its own LR schedule."""
    from distill_jax.distill.scheduler import MethodRun

    for init, expected in (("continue", [50, 100, 150]), ("restart", [50, 50, 50])):
        run = object.__new__(MethodRun)  # Only the step accounting: no pool, teacher or ledger needed.
        run.cfg = _config(corpus, methods="adaptive", budget=300)
        run.cfg.distill.stage_init, run.cfg.distill.epochs_per_stage = init, 0.0
        run.cfg.distill.min_steps_per_stage = 50
        run.dir = str(tmp_path / "adaptive")
        run.train_dir = str(tmp_path / "adaptive" / "train")
        run.state = {"stages": [{"quotas": {"a": 100}}] * 3}
        assert [run._target_step(i) for i in range(3)] == expected
        assert run._run_dir(2).endswith("stage_2/train" if init == "restart" else "adaptive/train")
