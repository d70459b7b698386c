"""The ledger and the spend model: attempts on disk before they are sent, bounds never over budget,
settlement to usage, kill -9 in flight, the three units, torn lines, old ledgers."""

import json

import pytest

from distill_jax.config import default_config
from distill_jax.teachers import spend
from distill_jax.teachers.base import Example, Request, Response
from distill_jax.teachers.ledger import Ledger
from distill_jax.teachers.spend import Budget, BudgetConfigError, Price, Usage


def _requests(n, domain="d"):
    return [Request("annotate", domain, example=Example(f"id{i}", domain, f"question {i}", "1")) for i in range(n)]


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_calls_charge_one_per_request_however_many_attempts(tmp_path):
    ledger = Ledger(str(tmp_path / "l.jsonl"), budget=2)
    budget = Budget(ledger, max_tokens=64, price=None)
    a, b, c = _requests(3)
    t = budget.open(a.key, "annotate", "d", "prompt")
    budget.settle(t, "unread", reason="timeout")  # A retry of the same request costs no second call.
    t = budget.open(a.key, "annotate", "d", "prompt")
    assert t.attempt == 1 and t.bound == 0
    budget.settle(t, "billed", Usage(10, 5))
    t = budget.open(b.key, "annotate", "d", "prompt")
    budget.settle(t, "free", reason="http_429")  # Refused: nothing billed, the request still costs nothing.
    assert ledger.spent == 1
    budget.settle(budget.open(b.key, "annotate", "d", "prompt"), "billed", Usage(1, 1))
    assert ledger.spent == 2 and budget.open(c.key, "annotate", "d", "prompt", wait=False) is None
    ledger.close()


def test_sent_is_on_disk_before_the_call_and_a_kill_is_charged_at_the_bound(tmp_path):
    path = str(tmp_path / "l.jsonl")
    ledger = Ledger(path, budget=1000, unit="tokens")
    budget = Budget(ledger, max_tokens=100, price=None)
    (a, b) = _requests(2)
    done = budget.open(a.key, "annotate", "d", "x" * 50)
    budget.settle(done, "billed", Usage(20, 30))
    in_flight = budget.open(b.key, "annotate", "d", "x" * 50)
    assert _records(path)[-1]["op"] == "sent" and _records(path)[-1]["bound"] == 50 + 16 + 100
    ledger.close()  # "kill -9" with b in flight.
    again = Ledger(path, budget=1000, unit="tokens")
    assert again.unknown_at_open == 1
    assert again.spent == 50 + in_flight.bound  # settled usage + the unknown at its bound
    assert again.summary()["attempts"] == {"billed": 1, "unknown": 1}
    assert _records(path)[-1] == {**_records(path)[-1], "op": "settle", "outcome": "unknown", "reason": "killed"}
    again.close()
    assert Ledger(path, budget=1000, unit="tokens").unknown_at_open == 0  # Settled once, on the first reopen.


def test_token_bounds_shrink_to_the_room_left_but_not_below_the_p95(tmp_path):
    # Defect 4: a budget must not end mostly unspent because each call reserved its worst case.
    ledger = Ledger(str(tmp_path / "l.jsonl"), budget=1000, unit="tokens")
    budget = Budget(ledger, max_tokens=400, price=None)
    made = 0
    for request in _requests(100):
        ticket = budget.open(request.key, "annotate", "d", "p" * 24, wait=False)
        if ticket is None:
            break
        assert ledger.spent <= ledger.budget
        budget.settle(ticket, "billed", Usage(10, 20 + made % 5))  # ~32 tokens per call.
        made += 1
    assert budget.completion_estimate() == 24  # p95 of 20..24 after 8 observations
    assert made >= 28 and ledger.spent <= 1000 and ledger.budget - ledger.spent < 24 + 40 + 32
    # Worst case reserved per call would have been 440: 2 calls in flight at most, not ~30 made.


def test_settled_plus_open_bounds_never_pass_the_budget_with_concurrent_workers(tmp_path):
    import threading

    ledger = Ledger(str(tmp_path / "l.jsonl"), budget=3000, unit="tokens")
    budget = Budget(ledger, max_tokens=300, price=None)
    requests = _requests(200)
    peak = []

    def worker(chunk):
        for request in chunk:
            ticket = budget.open(request.key, "annotate", "d", "p" * 40)
            if ticket is None:
                return
            peak.append(ledger.spent)
            budget.settle(ticket, "billed", Usage(12, min(ticket.cap, 40)))

    threads = [threading.Thread(target=worker, args=(requests[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert max(peak) <= 3000 + 1e-9 and ledger.spent <= 3000
    assert ledger.spent > 3000 - 300  # The tail was spent, not left as worst-case slack.


def test_usd_budget_prices_input_and_output_separately(tmp_path):
    ledger = Ledger(str(tmp_path / "l.jsonl"), budget=0.01, unit="usd")
    budget = Budget(ledger, max_tokens=100, price=Price(1.0, 4.0))  # $1 / $4 per million tokens
    (a,) = _requests(1)
    ticket = budget.open(a.key, "annotate", "d", "x" * 84)
    assert ticket.bound == pytest.approx((100 * 1.0 + 100 * 4.0) / 1e6)
    budget.settle(ticket, "billed", Usage(30, 50))
    assert ledger.spent == pytest.approx((30 + 200) / 1e6)
    row = ledger.summary()["stages"]["0"]
    assert (row["input_tokens"], row["output_tokens"]) == (30, 50) and row["usd"] == pytest.approx(230e-6)


def test_unknown_model_is_an_error_only_for_usd():
    cfg = default_config()
    assert spend.price_for("usd", "gpt-4o-mini", cfg.teacher.prices) == Price(0.15, 0.6)
    assert spend.price_for("tokens", "mystery", cfg.teacher.prices) is None
    with pytest.raises(BudgetConfigError, match="no price for model 'mystery'.*teacher.prices='mystery=IN/OUT'"):
        spend.price_for("usd", "mystery", cfg.teacher.prices)
    with pytest.raises(BudgetConfigError, match="not MODEL=IN/OUT"):
        spend.parse_prices("gpt=0.1")


def test_offline_teacher_is_metered_per_request_and_unavailable_is_free(tmp_path):
    class Stored:
        name = "stored"

        def complete(self, requests):
            return [Response(r.key, "unavailable" if i == 1 else "ok", tokens=7) for i, r in enumerate(requests)]

    ledger = Ledger(str(tmp_path / "l.jsonl"), budget=2)
    budget = Budget(ledger, max_tokens=64, price=None)
    requests = _requests(4)
    allowed, responses = spend.buy(Stored(), requests, budget)
    assert allowed == requests[:2] and ledger.spent == 1  # the unavailable one was refunded after the call
    assert spend.buy(Stored(), requests[2:], budget)[0] == requests[2:3] and ledger.spent == 2
    assert spend.buy(Stored(), requests[:1], budget)[0] == requests[:1] and ledger.spent == 2  # re-issue is free
    assert "stage 0: 3 requests" in spend.stage_line(ledger, 0)


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "l.jsonl"
    ledger = Ledger(str(path), budget=5)
    budget = Budget(ledger, max_tokens=8, price=None)
    for r in _requests(2):
        budget.settle(budget.open(r.key, "annotate", "d", ""), "billed", Usage(1, 1))
    ledger.close()
    with open(path, "ab") as f:
        f.write(b'{"op": "settle", "key": "abc')  # A kill in the middle of a write.
    again = Ledger(str(path), budget=5)
    assert again.spent == 2
    again.close()
    assert path.read_bytes().endswith(b"\n")


def test_a_ledger_of_the_old_format_still_reads(tmp_path):
    path = tmp_path / "l.jsonl"
    a, b, c = (r.key for r in _requests(3))
    lines = [
        dict(op="reserve", key=a, kind="annotate", domain="d", stage=0, amount=1.0),
        dict(op="reserve", key=b, kind="annotate", domain="d", stage=0, amount=1.0),
        dict(op="reserve", key=c, kind="annotate", domain="d", stage=0, amount=1.0),
        dict(op="settle", key=a, status="ok", amount=1.0, cached=False),
        dict(op="settle", key=b, status="unavailable", amount=0.0, cached=False),
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ledger = Ledger(str(path), budget=10)
    assert ledger.spent == 2 and ledger.unknown_at_open == 1 and ledger.status(a) == "ok"


def test_bad_budget_or_unit(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        Ledger(str(tmp_path / "a.jsonl"), budget=0)
    with pytest.raises(ValueError, match="'calls', 'tokens' or 'usd'"):
        Ledger(str(tmp_path / "b.jsonl"), budget=1, unit="dollars")
