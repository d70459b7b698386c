"""`distill-jax distill` with the OpenAI teacher against the LiteLLM proxy (behind the fault proxy): issue 16's
defects 1 and 9 at the level a user meets them (exit status, message, ledger), and a faulty run's report.

Slow: LiteLLM starts in ~10-30 s and each run trains a tiny student for a few steps.
"""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from teacher_servers import REPO, FaultProxy, LiteLLM, free_port, litellm_binary  # noqa: E402

KEY = "sk-litellm-distill-9d2e44"
pytestmark = pytest.mark.slow

CONFIG = """
from distill_jax.presets import demo_config


def get_config():
    c = demo_config()
    c.data.max_input_len, c.data.max_target_len = 64, 96
    c.train.batch_size, c.train.log_every, c.train.checkpoint_every = 16, 5, 5
    c.eval.batch_size, c.eval.max_examples_per_domain, c.eval.decode_examples_per_domain = 16, 6, 2
    c.eval.max_decode_len = 16
    c.distill.pool, c.distill.eval_data = {train!r}, {test!r}
    c.distill.pool_fields.update(dict(id="id", domain="domain", input="input", answer="target", rationale="rationale"))
    c.distill.budget, c.distill.stages, c.distill.methods = 40, 2, "naive"
    c.distill.epochs_per_stage, c.distill.min_steps_per_stage = 0.0, 2
    c.distill.ifd_max_candidates, c.distill.ifd_max_new_tokens, c.distill.ifd_batch_size = 8, 8, 16
    c.distill.request_chunk = 16
    c.distill.check_answers = False
    c.teacher.kind = "openai"
    c.teacher.api_key_env = "LITELLM_DISTILL_KEY"
    c.teacher.timeout_s, c.teacher.backoff_s, c.teacher.max_retries, c.teacher.concurrency = 2.0, 0.01, 4, 4
    return c
"""


@pytest.fixture(scope="module")
def litellm(tmp_path_factory):
    binary = litellm_binary()
    if binary is None:
        pytest.skip(
            "LiteLLM proxy not installed: python3 -m venv ../litellm_venv && "
            "../litellm_venv/bin/pip install 'litellm[proxy]==1.82.6' (or set $DISTILL_LITELLM)"
        )
    reply = "Count them step by step. So the answer is 4."
    server = LiteLLM(binary, tmp_path_factory.mktemp("litellm"), KEY, {"mock-teacher": reply})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    from distill_jax.data.demo_corpus import write_demo_corpus

    root = tmp_path_factory.mktemp("distill_corpus")
    corpus = write_demo_corpus(str(root), seed=0, num_train=400, num_test_per_domain=4)
    path = root / "cfg.py"
    path.write_text(CONFIG.format(train=corpus["train"], test=corpus["test"]))
    return path


def _distill(config_file, workdir, *overrides, key=KEY):
    env = {**os.environ, "LITELLM_DISTILL_KEY": key, "no_proxy": "*", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "distill_jax.cli.main",
            "distill",
            f"--config={config_file}",
            f"--workdir={workdir}",
            *overrides,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _sent(workdir):
    path = workdir / "naive" / "ledger.jsonl"
    return [] if not path.exists() else [r for r in map(json.loads, path.read_text().splitlines()) if r["op"] == "sent"]


def test_wrong_model_or_dead_port_stop_before_stage_0_then_the_right_model_buys_the_whole_budget(
    litellm, config_file, tmp_path
):
    workdir = tmp_path / "w"
    # Defect 1: the default teacher.model is not served (LiteLLM: 400 "Invalid model name"): used to burn the budget.
    bad = _distill(config_file, workdir, f"--config.teacher.base_url={litellm.base_url}")
    assert bad.returncode != 0 and "teacher.model='gpt-4o-mini' is not served" in bad.stderr
    assert _sent(workdir) == []
    # Defect 9: a closed port: nothing is ever sent, so nothing is charged, and the run says so.
    dead = _distill(
        config_file,
        workdir,
        f"--config.teacher.base_url=http://127.0.0.1:{free_port()}/v1",
        "--config.teacher.model=mock-teacher",
    )
    assert dead.returncode != 0 and "nothing was sent or charged" in dead.stderr and _sent(workdir) == []

    proxy = FaultProxy(litellm.base_url, rate=0.25, seed=3, slow_s=3.0)
    try:
        good = _distill(
            config_file, workdir, f"--config.teacher.base_url={proxy.base_url}", "--config.teacher.model=mock-teacher"
        )
    finally:
        proxy.stop()
    assert good.returncode == 0, good.stderr[-3000:]
    report = json.loads((workdir / "report.json").read_text())
    ledger = report["methods"]["naive"]["ledger"]
    assert ledger["spent"] == 40 and ledger["left"] == 0  # The rerun bought the whole budget.
    stages = ledger["stages"]
    assert sum(s["requests"] for s in stages.values()) >= 40
    billed, unread = ledger["attempts"].get("billed", 0), ledger["attempts"].get("unread", 0)
    assert billed + unread == proxy.forwarded  # Every request LiteLLM served is in the ledger.
    retries = {}
    for s in stages.values():
        for reason, n in s["retries"].items():
            retries[reason] = retries.get(reason, 0) + n
    assert sum(retries.values()) == sum(n for f, n in proxy.faults.items() if f != "pass")  # every fault counted
    assert "stage 1:" in good.stderr and "retries" in good.stderr and "left 0 of 40 calls" in good.stderr
    print(
        f"\ndistill via LiteLLM: served={proxy.forwarded} faults={proxy.faults} attempts={ledger['attempts']} "
        f"retries={retries} stages={ {k: (v['requests'], v['cache_hits'], v['dedup'], v['spent']) for k, v in stages.items()} }"
    )
    hits = [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not hits and KEY not in good.stderr + good.stdout + bad.stderr + dead.stderr
