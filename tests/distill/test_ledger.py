"""The ledger: reservations before calls, one charge per request, never over budget, torn lines survived."""

import pytest

from distill_jax.distill.ledger import Ledger
from distill_jax.teachers.base import Example, Request, Response


def _requests(n, domain="d"):
    return [Request("annotate", domain, example=Example(f"id{i}", domain, f"question {i}", "1")) for i in range(n)]


def test_reserve_stops_at_the_budget_and_charges_once(tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    ledger = Ledger(path, budget=3)
    reqs = _requests(5)
    allowed = ledger.reserve(reqs, [1.0] * 5, stage=0)
    assert allowed == reqs[:3]
    ledger.settle([Response(r.key, "ok") for r in allowed])
    assert ledger.spent == 3
    # Re-issuing charged requests is free and allowed; new ones are refused.
    assert ledger.reserve(reqs, [1.0] * 5, stage=1) == reqs[:3]
    ledger.settle([Response(r.key, "ok") for r in reqs[:3]])
    assert ledger.spent == 3
    ledger.close()


def test_unavailable_is_refunded_failed_is_paid(tmp_path):
    ledger = Ledger(str(tmp_path / "l.jsonl"), budget=10)
    reqs = _requests(3)
    ledger.reserve(reqs, [1.0] * 3, stage=0)
    ledger.settle([Response(reqs[0].key, "ok"), Response(reqs[1].key, "failed"), Response(reqs[2].key, "unavailable")])
    assert ledger.spent == 2
    assert ledger.summary()["spent_by_outcome"] == {
        "annotate/failed": 1.0,
        "annotate/ok": 1.0,
        "annotate/unavailable": 0.0,
    }


def test_state_survives_reopen_and_in_flight_reservations_count(tmp_path):
    path = str(tmp_path / "l.jsonl")
    ledger = Ledger(path, budget=4)
    reqs = _requests(4)
    ledger.reserve(reqs[:3], [1.0] * 3, stage=0)
    ledger.settle([Response(reqs[0].key, "ok")])
    ledger.close()  # "Killed" with two calls in flight: they stay charged.
    again = Ledger(path, budget=4)
    assert again.spent == 3
    assert again.reserve(reqs, [1.0] * 4, stage=0) == reqs  # Three already charged + one that fits.
    assert again.remaining == 0
    again.close()


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "l.jsonl"
    ledger = Ledger(str(path), budget=5)
    reqs = _requests(2)
    ledger.reserve(reqs, [1.0, 1.0], stage=0)
    ledger.close()
    with open(path, "ab") as f:
        f.write(b'{"op": "settle", "key": "abc')  # A kill in the middle of a write.
    again = Ledger(str(path), budget=5)
    assert again.spent == 2
    again.close()
    assert path.read_bytes().endswith(b"\n")


def test_tokens_are_charged_as_billed_but_never_above_the_reservation(tmp_path):
    ledger = Ledger(str(tmp_path / "l.jsonl"), budget=1000, unit="tokens")
    reqs = _requests(2)
    ledger.reserve(reqs, [300.0, 300.0], stage=0)
    ledger.settle([Response(reqs[0].key, "ok", tokens=120), Response(reqs[1].key, "ok", tokens=5000)])
    assert ledger.spent == 420
    assert ledger.mean_charge() == 210


def test_bad_budget_or_unit(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        Ledger(str(tmp_path / "a.jsonl"), budget=0)
    with pytest.raises(ValueError, match="calls' or 'tokens"):
        Ledger(str(tmp_path / "b.jsonl"), budget=1, unit="dollars")
