"""The budget ledger: every teacher call is reserved, durably, before it is made.

An append-only JSONL file. A `reserve` line (request key, kind, domain, stage, amount) is flushed and
fsync'ed before the request goes out; a `settle` line records the outcome and the amount actually
charged. What counts as spent is, per request key, its settled amount -- or, for a reservation
with no settlement (the process died while the call was in flight), the reserved amount. So:
- the budget can never be exceeded, even across kill -9: a reservation that would exceed it is
  refused before the call is made;
- a request is charged once: re-issuing a reserved or settled key after a restart costs nothing more
  (the teachers' caches answer it without paying again);
- a torn last line (a kill mid-write) is dropped on open; every complete line is kept.

Units are "calls" (one per request; what BalDistill's budget counts) or "tokens" (as billed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from absl import logging

from distill_jax.teachers.base import Request, Response

Unit = Literal["calls", "tokens"]


class BudgetExceeded(RuntimeError):
    pass


@dataclasses.dataclass
class _Entry:
    reserved: float
    settled: float | None = None
    status: str = ""
    kind: str = ""
    domain: str = ""
    stage: int = -1
    cached: bool = False

    @property
    def charged(self) -> float:
        return self.reserved if self.settled is None else self.settled


class Ledger:
    def __init__(self, path: str, budget: float, unit: Unit = "calls"):
        if unit not in ("calls", "tokens"):
            raise ValueError(f"budget unit must be 'calls' or 'tokens', got {unit!r}")
        if budget <= 0:
            raise ValueError(f"the teacher budget must be positive, got {budget}")
        self.path = path
        self.budget = float(budget)
        self.unit = unit
        self._entries: dict[str, _Entry] = {}
        self._load()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 -- held open for appends; closed in close().

    def _load(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        good = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
        if len(good) != len(data):
            logging.warning(
                "%s: dropping a torn last line (%d bytes) left by a killed run", self.path, len(data) - len(good)
            )
            with open(self.path, "r+b") as f:
                f.truncate(len(good))
        for number, line in enumerate(good.decode("utf-8").splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{number}: not a ledger record ({err}); the ledger is corrupt") from err
            self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        key = record["key"]
        if record["op"] == "reserve":
            self._entries.setdefault(
                key,
                _Entry(
                    reserved=float(record["amount"]),
                    kind=record.get("kind", ""),
                    domain=record.get("domain", ""),
                    stage=int(record.get("stage", -1)),
                ),
            )
        elif record["op"] == "settle":
            entry = self._entries[key]
            entry.settled = float(record["amount"])
            entry.status = record["status"]
            entry.cached = bool(record.get("cached", False))

    def _append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        self._file.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())
        for r in records:
            self._apply(r)

    @property
    def spent(self) -> float:
        return sum(e.charged for e in self._entries.values())

    @property
    def remaining(self) -> float:
        return self.budget - self.spent

    def mean_charge(self) -> float | None:
        """Mean settled amount of the calls that reached a teacher (None before the first)."""
        amounts = [e.settled for e in self._entries.values() if e.settled is not None and e.status != "unavailable"]
        return sum(amounts) / len(amounts) if amounts else None

    def is_charged(self, key: str) -> bool:
        return key in self._entries

    def settled_status(self, key: str) -> str | None:
        entry = self._entries.get(key)
        return None if entry is None or entry.settled is None else entry.status

    def reserve(self, requests: Sequence[Request], amounts: Sequence[float], stage: int) -> list[Request]:
        """Reserves budget for the requests not yet charged, in order, while it lasts.

        Returns the requests that may be sent: those already charged (free to re-issue) plus the new
        ones that fit. The first new request that does not fit stops the reservation.
        """
        allowed, records = [], []
        left = self.remaining
        for request, amount in zip(requests, amounts):
            if request.key in self._entries:
                allowed.append(request)
                continue
            if amount > left + 1e-9:
                break
            left -= amount
            allowed.append(request)
            records.append(
                dict(
                    op="reserve",
                    key=request.key,
                    kind=request.kind,
                    domain=request.domain,
                    stage=stage,
                    amount=amount,
                    time=time.time(),
                )
            )
        self._append(records)
        return allowed

    def settle(self, responses: Sequence[Response]) -> None:
        """Records outcomes. `unavailable` costs nothing; otherwise calls cost 1 and tokens what was billed."""
        records = []
        for r in responses:
            entry = self._entries.get(r.request_key)
            if entry is None:
                raise KeyError(f"response for request {r.request_key[:12]} that was never reserved")
            if entry.settled is not None:
                continue  # Charged once; a re-issued request's answer changes nothing.
            if r.status == "unavailable":
                amount = 0.0
            elif self.unit == "calls":
                amount = 1.0
            else:
                # Never more than was reserved: the reservation is the bound the budget check relied on.
                amount = float(min(r.tokens, entry.reserved)) if r.tokens else entry.reserved
            records.append(
                dict(
                    op="settle",
                    key=r.request_key,
                    status=r.status,
                    amount=amount,
                    cached=bool(getattr(r, "cached", False)),
                )
            )
        self._append(records)

    def summary(self) -> dict[str, Any]:
        """Spent per stage and per (kind, status), for reports."""
        by_stage: dict[int, float] = {}
        by_outcome: dict[str, float] = {}
        for e in self._entries.values():
            by_stage[e.stage] = by_stage.get(e.stage, 0.0) + e.charged
            outcome = f"{e.kind}/{e.status or 'in-flight'}"
            by_outcome[outcome] = by_outcome.get(outcome, 0.0) + e.charged
        return {
            "unit": self.unit,
            "budget": self.budget,
            "spent": self.spent,
            "spent_by_stage": {str(k): v for k, v in sorted(by_stage.items())},
            "spent_by_outcome": dict(sorted(by_outcome.items())),
        }

    def close(self) -> None:
        self._file.close()
