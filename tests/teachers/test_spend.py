"""Issue 16's defects, one test each, against real HTTP servers on 127.0.0.1 (an OpenAI-like server and
the project's fault proxy in front of it): metered attempts, classification, dedupe, pre-flight."""

import logging
import os
import sys

import pytest

from distill_jax.teachers import spend
from distill_jax.teachers.base import Example, Request, TeacherConfigError
from distill_jax.teachers.ledger import Ledger
from distill_jax.teachers.openai import OpenAITeacher
from distill_jax.teachers.spend import Budget, Price

sys.path.insert(0, os.path.dirname(__file__))
from teacher_servers import FaultProxy, MockOpenAI, free_port  # noqa: E402

KEY = "sk-spend-SECRET-7f3a9c"
ANNOTATE = "[{domain}] Gold: {answer}. Question: {input}"


@pytest.fixture
def mock(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    server = MockOpenAI(KEY)
    yield server
    server.stop()


@pytest.fixture
def proxy(mock):
    p = FaultProxy(mock.base_url)
    yield p
    p.stop()


def teacher(tmp_path, base_url, model="mock-teacher", **kw):
    settings = dict(temperature=0.0, max_tokens=64, concurrency=2, timeout_s=1.0, max_retries=3, backoff_s=0.0)
    settings.update(kw)
    return OpenAITeacher(
        base_url,
        model,
        KEY,
        cache_path=tmp_path / "cache.sqlite",
        annotate_prompt=ANNOTATE,
        synthesize_prompt="Like these: {examples} ({domain})",
        paraphrase_prompt="{k} paraphrases: {input}",
        api_key_env="SPEND_TEST_KEY",
        sleep=lambda s: None,
        **settings,
    )


def annotate(i):
    return Request("annotate", "math", Example(f"id{i}", "math", f"What is {i}?", "4"))


def budget(tmp_path, amount, unit="calls", price=None):
    return Budget(Ledger(str(tmp_path / "ledger.jsonl"), amount, unit), max_tokens=64, price=price)


def test_invalid_model_400_stops_the_run_uncharged_and_names_the_setting(tmp_path, mock):
    # Defect 1: a 400 "Invalid model name" used to be charged as a failed call for every request, exit 0.
    t, b = teacher(tmp_path, mock.base_url, model="gpt-4o-mini", concurrency=1), budget(tmp_path, 10)
    with pytest.raises(TeacherConfigError, match="Invalid model name.*Fix teacher.model='gpt-4o-mini'"):
        spend.buy(t, [annotate(i) for i in range(6)], b)
    assert len(mock.calls) == 1  # Stopped before the next request.
    assert b.ledger.spent == 0 and b.ledger.summary()["attempts"] == {"free": 1}
    with pytest.raises(TeacherConfigError, match="teacher.model='gpt-4o-mini' is not served.*mock-teacher"):
        t.preflight()  # And before stage 0, the model list says so for free.


def test_wrong_key_is_caught_by_the_preflight(tmp_path, mock):
    t = OpenAITeacher(
        mock.base_url,
        "mock-teacher",
        "sk-wrong",
        temperature=0.0,
        max_tokens=8,
        concurrency=1,
        timeout_s=1.0,
        max_retries=0,
        backoff_s=0.0,
        cache_path=tmp_path / "c.sqlite",
        annotate_prompt=ANNOTATE,
        synthesize_prompt="{examples}{domain}",
        paraphrase_prompt="{k}{input}",
        api_key_env="SPEND_TEST_KEY",
    )
    with pytest.raises(TeacherConfigError, match="HTTP 401.*SPEND_TEST_KEY"):
        t.preflight()
    assert mock.calls == []


def test_empty_choices_are_charged_once(tmp_path, mock, proxy):
    # Defect 2: usage of a choice-less reply was added, then added again through the retry.
    proxy.server.script = ["no_choices"]
    b = budget(tmp_path, 10_000, "tokens")
    _, (response,) = spend.buy(teacher(tmp_path, proxy.base_url), [annotate(1)], b)
    assert response.status == "ok" and proxy.forwarded == 2
    attempts = sorted(b.ledger.attempts.values(), key=lambda a: a.attempt)
    assert [a.reason for a in attempts] == ["no_choices", ""]
    assert attempts[0].amount == attempts[1].amount  # Both billed by the server, each once.
    assert b.ledger.spent == 2 * attempts[1].amount == response.tokens


@pytest.mark.parametrize("fault", ["truncated", "malformed", "empty", "reset", "http_502", "slow"])
def test_billed_but_unread_replies_are_charged_at_their_bound(tmp_path, mock, proxy, fault):
    # Defect 3: timeouts, truncated and malformed bodies were billed by the provider but counted as 0 tokens.
    proxy.server.script = [fault]
    proxy.server.slow_s = 1.5
    b = budget(tmp_path, 10_000, "tokens")
    _, (response,) = spend.buy(teacher(tmp_path, proxy.base_url, timeout_s=0.5), [annotate(1)], b)
    assert response.status == "ok" and proxy.forwarded == 2
    first, second = sorted(b.ledger.attempts.values(), key=lambda a: a.attempt)
    assert first.outcome == "unread" and first.amount == first.bound > second.amount
    assert b.ledger.spent == first.bound + second.amount


def test_retry_after_is_honoured_free_and_every_reason_is_counted(tmp_path, mock, proxy, caplog):
    # Defect 7: a 30 s log throttle hid most retry reasons.
    caplog.set_level(logging.INFO)
    proxy.server.script = ["retry_after", "retry_after", "malformed", "retry_after"]
    slept = []
    t = teacher(tmp_path, proxy.base_url, concurrency=1, max_retries=5)
    t._endpoint.sleep = slept.append
    b = budget(tmp_path, 10)
    spend.buy(t, [annotate(1), annotate(2)], b)
    assert slept.count(0.05) == 3  # Retry-After, not the backoff.
    row = b.ledger.summary()["stages"]["0"]
    assert row["retries"] == {"http_429": 3, "malformed": 1} and row["outcomes"] == {
        "billed": 2,
        "free": 3,
        "unread": 1,
    }
    assert b.ledger.spent == 2  # Two requests; 429s are free and retries cost no second call.
    assert caplog.text.count("retrying") == 4
    line = spend.stage_line(b.ledger, 0)
    assert "2 requests (6 attempts" in line and "retries 4 {'http_429': 3, 'malformed': 1}" in line and "left 8" in line


def test_identical_requests_are_bought_once(tmp_path, mock):
    # Defect 5: synthesis requests with the same seeds (small tail pools) were paid separately.
    seeds = (Example("s1", "geo", "a", "1"),)
    requests = [Request("synthesize", "geo", seeds=seeds, index=i) for i in range(4)] + [annotate(1), annotate(1)]
    b = budget(tmp_path, 10)
    allowed, responses = spend.buy(teacher(tmp_path, mock.base_url), requests, b)
    assert len(allowed) == 6 and all(r.status == "ok" for r in responses) and len(mock.calls) == 2
    assert b.ledger.spent == 2
    assert sum(info.source == "dedup" for info in b.ledger.requests.values()) == 3  # annotate(1) twice = one key


def test_connection_refused_is_not_charged_and_stops_the_run(tmp_path):
    # Defect 9: a closed port was charged 30 of 30 calls and the run exited 0.
    dead = f"http://127.0.0.1:{free_port()}/v1"
    t, b = teacher(tmp_path, dead, max_retries=2), budget(tmp_path, 30)
    with pytest.raises(TeacherConfigError, match="does not answer.*nothing was sent or charged"):
        t.preflight()
    with pytest.raises(TeacherConfigError, match="refused every connection.*nothing was sent or charged"):
        spend.buy(t, [annotate(i) for i in range(5)], b)
    assert b.ledger.spent == 0 and set(b.ledger.summary()["attempts"]) == {"free"}


def test_a_request_that_would_not_fit_is_skipped_not_sent(tmp_path, mock):
    b = budget(tmp_path, 0.0002, "usd", Price(1.0, 2.0))  # $200 per... a few calls at most
    allowed, responses = spend.buy(teacher(tmp_path, mock.base_url, concurrency=1), [annotate(i) for i in range(50)], b)
    assert 0 < len(allowed) < 50 and len(mock.calls) == len(allowed)
    assert b.ledger.spent <= 0.0002 and b.ledger.summary()["left"] < Price(1.0, 2.0).usd(40, 64)


def test_the_key_is_in_no_file_and_no_log(tmp_path, mock, proxy, caplog):
    caplog.set_level(logging.DEBUG)
    proxy.server.script = ["malformed", "reset", "http_502"]
    b = budget(tmp_path, 10_000, "tokens")
    t = teacher(tmp_path, proxy.base_url, model="gpt-4o-mini", concurrency=1)
    with pytest.raises(TeacherConfigError) as e:
        spend.buy(t, [annotate(1), annotate(2)], b)
    t.close()
    b.ledger.close()
    assert KEY not in str(e.value) and KEY not in caplog.text and KEY not in repr(t)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not [p for p in files if KEY.encode() in p.read_bytes()]


def test_a_budget_below_one_worst_case_call_says_so(tmp_path, mock):
    with pytest.raises(spend.BudgetConfigError, match="below one call's worst case.*teacher.max_tokens=64"):
        spend.buy(teacher(tmp_path, mock.base_url), [annotate(1)], budget(tmp_path, 50, "tokens"))
    assert mock.calls == []
