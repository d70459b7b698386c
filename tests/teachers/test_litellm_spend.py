"""Teacher spend against the real LiteLLM proxy (mock_response models) behind the project's fault proxy.

Slow (the proxy takes ~10-30 s to start on 2 cores): CI's second step installs it into ../litellm_venv.
Cases: LiteLLM's own 400s (invalid model; a wrong key without a database) stop the run uncharged,
a token budget is spent to its tail, a usd budget with a price table, and kill -9 at random moments
over many runs with faults on: the ledger never passes the budget, and billed + unread + unknown
attempts account for every request LiteLLM saw. The API key is in no file and no log.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from teacher_servers import REPO, FaultProxy, LiteLLM, litellm_binary  # noqa: E402

KEY = "sk-litellm-MASTER-5c1e0b77"
REPLY = "1. The cat rested on the rug.\n2. On the mat, the cat sat down."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def litellm(tmp_path_factory):
    binary = litellm_binary()
    if binary is None:
        pytest.skip(
            "LiteLLM proxy not installed: python3 -m venv ../litellm_venv && "
            "../litellm_venv/bin/pip install 'litellm[proxy]==1.82.6' (or set $DISTILL_LITELLM)"
        )
    server = LiteLLM(binary, tmp_path_factory.mktemp("litellm"), KEY, {"mock-teacher": REPLY})
    yield server
    server.stop()


def _sentences(path, n):
    path.write_text("".join(f"Sentence number {i} says the cat sat on the mat.\n" for i in range(n)))
    return path


def _args(tmp_path, base_url, *extra):
    return [
        sys.executable,
        "-m",
        "distill_jax.cli.main",
        "paraphrase-corpus",
        "--from=teacher",
        f"--input={tmp_path / 'sentences.txt'}",
        f"--output_dir={tmp_path / 'out'}",
        "--config.teacher.kind=openai",
        f"--config.teacher.base_url={base_url}",
        "--config.teacher.model=mock-teacher",
        "--config.teacher.api_key_env=LITELLM_TEST_KEY",
        "--config.teacher.timeout_s=2",
        "--config.teacher.backoff_s=0.01",
        "--config.teacher.max_retries=4",
        "--config.teacher.concurrency=4",
        "--config.paraphrase.request_chunk=8",
        "--config.paraphrase.k=2",
        *extra,
    ]


def _env():
    return {**os.environ, "LITELLM_TEST_KEY": KEY, "no_proxy": "*", "JAX_PLATFORMS": "cpu"}


def _ledger(tmp_path):
    with open(tmp_path / "out" / "ledger.jsonl") as f:
        return [json.loads(line) for line in f]


def _assert_key_nowhere(tmp_path, *logs):
    hits = [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not hits and not any(KEY in log for log in logs)


def test_litellm_400s_stop_the_run_uncharged(tmp_path, litellm):
    _sentences(tmp_path / "sentences.txt", 5)
    # The default model is not served: LiteLLM answers 400 "Invalid model name"; the pre-flight's model list says so.
    run = subprocess.run(
        _args(tmp_path, litellm.base_url, "--config.teacher.model=gpt-4o-mini"),
        env=_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0 and "teacher.model='gpt-4o-mini' is not served" in run.stderr
    # A wrong key: LiteLLM without a database answers 400 "No connected db." (not 401).
    run = subprocess.run(
        _args(tmp_path, litellm.base_url),
        env={**_env(), "LITELLM_TEST_KEY": "sk-wrong"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0 and "No connected db" in run.stderr and "LITELLM_TEST_KEY" in run.stderr
    assert not [r for r in _ledger(tmp_path) if r["op"] == "sent"]  # Nothing charged: nothing was sent.
    _assert_key_nowhere(tmp_path, run.stderr, run.stdout)


def test_token_and_usd_budgets_are_spent_to_the_tail_never_past(tmp_path, litellm):
    _sentences(tmp_path / "sentences.txt", 60)
    for unit, amount, extra in [
        ("tokens", 1000, []),
        ("usd", 0.004, ["--config.teacher.prices=mock-teacher=1.5/4.0"]),
    ]:
        out = tmp_path / "out"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        run = subprocess.run(
            _args(
                tmp_path,
                litellm.base_url,
                f"--config.distill.budget={amount}",
                f"--config.distill.budget_unit={unit}",
                *extra,
            ),
            env=_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        counts = json.loads((out / "filter_counts.json").read_text())
        ledger = counts["teacher"]["ledger"]
        assert ledger["spent"] <= amount and counts["teacher"]["not_asked"] > 0
        # LiteLLM's mock bills 10 prompt + 20 completion tokens. The last call must fit its worst case: the
        # prompt's bytes (~270, a token being at least a byte) + the run's p95 completion (20). Old: 80% unspent.
        worst_last = 270 + 16 + 20 if unit == "tokens" else (286 * 1.5 + 20 * 4.0) / 1e6
        assert ledger["left"] < worst_last + ledger["spent"] / counts["teacher"]["requests"], ledger
        assert ledger["spent"] > 0.6 * amount
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(
            _args(tmp_path, litellm.base_url, "--config.distill.budget_unit=usd", "--config.teacher.prices=other=1/1"),
            env=_env(),
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=300,
        )


def test_kill_9_at_random_moments_with_faults_never_passes_the_budget(tmp_path, litellm):
    """Defect 8: calls in flight at a kill may be served (billed) and served again on resume; the ledger
    must count them (`unknown`), charge them at their bound, and still never pass the budget."""
    runs = int(os.environ.get("DISTILL_KILL_RUNS", "20"))
    _sentences(tmp_path / "sentences.txt", 120)
    proxy = FaultProxy(litellm.base_url, rate=0.3, seed=16, slow_s=3.0)
    budget = 90  # calls; 120 sentences, so the budget ends the run.
    rng = random.Random(16)
    logs, kills = [], 0
    try:
        for i in range(runs):
            proc = subprocess.Popen(
                _args(tmp_path, proxy.base_url, f"--config.distill.budget={budget}"),
                env=_env(),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            if i < runs - 1:
                time.sleep(rng.uniform(1.0, 4.0))  # Start-up is ~1.5 s; kill while calls are in flight.
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            out, err = proc.communicate(timeout=600)
            logs += [out, err]
            records = _ledger(tmp_path) if (tmp_path / "out" / "ledger.jsonl").exists() else []
            sent = {(r["key"], r["attempt"]): r["bound"] for r in records if r["op"] == "sent"}
            charged = dict(sent)
            charged.update({(r["key"], r["attempt"]): r["amount"] for r in records if r["op"] == "settle"})
            assert sum(charged.values()) <= budget + 1e-9  # Settled + open bounds: never over the budget.
        assert proc.returncode == 0, err[-3000:]
        outcomes = {}
        for r in _ledger(tmp_path):
            if r["op"] == "settle":
                outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        settled = {(r["key"], r["attempt"]) for r in _ledger(tmp_path) if r["op"] == "settle"}
        assert settled == set(sent)  # Every attempt ever sent is settled (the killed ones as unknown).
        billed, unread, unknown = (outcomes.get(k, 0) for k in ("billed", "unread", "unknown"))
        seen = proxy.forwarded  # Requests LiteLLM served.
        assert billed + unread <= seen <= billed + unread + unknown, (outcomes, seen)
        counts = json.loads((tmp_path / "out" / "filter_counts.json").read_text())
        summary = counts["teacher"]["ledger"]
        assert summary["spent"] <= budget
        print(
            f"\nkill-9 runs={runs} kills={kills} litellm_served={seen} proxy_received={proxy.received} "
            f"faults={proxy.faults} ledger_outcomes={outcomes} spent={summary['spent']} of {budget} calls "
            f"cache_hits_last_run={counts['teacher']['cached']} requests_last_run={counts['teacher']['requests']}"
        )
    finally:
        proxy.stop()
    _assert_key_nowhere(tmp_path, *logs)
