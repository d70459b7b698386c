"""The budget ledger: every teacher attempt is written down, durably, before it is sent.

An append-only JSONL file (flushed and fsync'ed per write), three kinds of record:

  sent    {key, attempt, kind, domain, stage, estimate, bound}: written *before* the HTTP request.
          `bound` is the most this attempt can cost in the ledger's unit; it counts as spent until
          the attempt is settled.
  settle  {key, attempt, outcome, amount, input_tokens, output_tokens, usd, reason}: what it cost.
          outcome billed (the provider's usage), unread (a reply may have been billed but could not
          be read: charged at the bound), unknown (in flight at a kill: found on reopen, charged at
          the bound), free (refused or never sent: nothing billed), cache (an answer stored earlier,
          charged at what it was originally billed, so methods compare at the same budget).
  done    {key, status, source}: the request's outcome (ok / failed / unavailable) and where the
          answer came from (paid, cache, dedup = the same request asked once this run).

Guarantees: spent = settled amounts + bounds of open attempts, and an attempt whose bound does
not fit what is left is never opened, so spent never passes the budget -- across kill -9 too,
since the `sent` line is on disk before the request leaves. A request whose key is `done` is free
to re-issue. What the ledger cannot know: whether the provider billed an attempt that was in flight
at a kill (it is charged at its bound and counted as `unknown`; re-asking it is billed again by the
provider, there being no idempotency key in the OpenAI API).

On object storage (a gs:// or s3:// path) nothing can be appended to or fsync'ed: each append is one
new write-once segment object (storage.SegmentLog: one small PUT, in the bucket before the request
leaves, so the guarantee above holds across the loss of the host), and opening and closing the ledger
compacts the segments into ledger.jsonl itself. Replaying a record twice (a kill during compaction) is
a no-op: every record is keyed by request and attempt and applied once.

Units: calls (one per request that reached the teacher, however many attempts; BalDistill's
unit), tokens (input + output, as the provider bills) or usd (a per-model price table).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

from absl import logging

from distill_jax import storage
from distill_jax.teachers import ledger_summary

Unit = Literal["calls", "tokens", "usd"]
UNITS = ("calls", "tokens", "usd")
CHARGED = ("billed", "unread", "unknown", "cache")  # Outcomes that cost budget.


class BudgetExceeded(RuntimeError):
    pass


@dataclasses.dataclass
class Attempt:
    key: str
    attempt: int
    stage: int
    bound: float
    estimate: float
    outcome: str = ""  # "" while open (in flight).
    amount: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float | None = None
    reason: str = ""

    @property
    def charged(self) -> float:
        return self.bound if not self.outcome else self.amount


@dataclasses.dataclass
class RequestInfo:
    kind: str = ""
    domain: str = ""
    stage: int = -1
    status: str = ""
    source: str = ""


class Ledger:
    """Thread-safe: the HTTP teacher's workers open and settle attempts concurrently."""

    def __init__(self, path: str, budget: float, unit: Unit = "calls"):
        if unit not in UNITS:
            raise ValueError(f"budget unit must be 'calls', 'tokens' or 'usd', got {unit!r}")
        if budget <= 0:
            raise ValueError(f"the teacher budget must be positive, got {budget}")
        self.path = storage.check(path)
        # Object storage: appends are segment objects, the whole log is kept in memory for compaction.
        self._log = storage.SegmentLog(self.path) if storage.is_remote(self.path) else None
        self._content = bytearray()
        self.budget = float(budget)
        self.unit = unit
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.requests: dict[str, RequestInfo] = {}
        self._committed = 0.0  # settled + open bounds, kept incrementally (read under the lock).
        # Per-key attempts and the open count, so each check is O(attempts of one key), not of the ledger.
        self._by_key: dict[str, list[Attempt]] = collections.defaultdict(list)
        self._open = 0
        self._lock = threading.Condition()
        self._batch = threading.local()  # .records: this thread's appends inside `batch()`, written at its end
        self._load()
        if self._log is None:  # Held open for appends; closed in close().
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        # Attempts sent by a killed run and never settled: the provider may have billed them.
        stale = [a for a in self.attempts.values() if not a.outcome]
        self.unknown_at_open = len(stale)
        if stale:
            logging.warning(
                "%s: %d teacher calls were in flight when the last run was killed; charged at their bound "
                "(%.6g %s) since the provider may have billed them, and asking again is billed again.",
                path,
                len(stale),
                sum(a.bound for a in stale),
                unit,
            )
            with self.batch():  # one write for all of them
                for a in stale:
                    self.settle(a.key, a.attempt, "unknown", a.bound, reason="killed")

    # ------------------------------------------------------------------------------- storage

    def _load(self) -> None:
        if self._log is not None:
            data = self._log.read()
        elif not os.path.exists(self.path):
            return
        else:
            with open(self.path, "rb") as f:
                data = f.read()
        good = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
        if self._log is not None:
            self._content = bytearray(good)
            if data:
                self._log.compact(good)
        elif len(good) != len(data):
            logging.warning(
                "%s: dropping a torn last line (%d bytes) left by a killed run", self.path, len(data) - len(good)
            )
            with open(self.path, "r+b") as f:
                f.truncate(len(good))
        for number, line in enumerate(good.decode("utf-8").splitlines(), 1):
            try:
                self._apply(json.loads(line))
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{self.path}:{number}: not a ledger record ({err}); the ledger is corrupt") from err

    def _apply(self, r: dict[str, Any]) -> None:
        op, key = r["op"], r["key"]
        if op == "reserve":  # A ledger written before attempts were recorded: one attempt per request.
            r = dict(r, op="sent", attempt=0, bound=r["amount"], estimate=r["amount"])
            op = "sent"
        if op == "sent":
            info = self.requests.setdefault(key, RequestInfo())
            info.kind, info.domain, info.stage = r.get("kind", ""), r.get("domain", ""), int(r.get("stage", -1))
            a = Attempt(key, int(r["attempt"]), int(r.get("stage", -1)), float(r["bound"]), float(r["estimate"]))
            if (key, a.attempt) not in self.attempts:
                self.attempts[(key, a.attempt)] = a
                self._by_key[key].append(a)
                self._committed += a.bound
                self._open += 1
        elif op == "settle":
            if "attempt" not in r:  # Old format: the request's settlement.
                r = dict(r, attempt=0, outcome="free" if r["status"] == "unavailable" else "billed")
                self._apply(dict(op="done", key=key, status=r["status"], source="cache" if r.get("cached") else "paid"))
            a = self.attempts[(key, int(r["attempt"]))]
            if a.outcome:
                return
            self._committed += float(r["amount"]) - a.bound
            self._open -= 1
            a.outcome, a.amount, a.reason = r["outcome"], float(r["amount"]), r.get("reason", "")
            a.input_tokens, a.output_tokens, a.usd = (
                int(r.get("input_tokens", 0)),
                int(r.get("output_tokens", 0)),
                r.get("usd"),
            )
        elif op == "done":
            info = self.requests.setdefault(key, RequestInfo())
            if not info.status:
                info.status, info.source = r["status"], r.get("source", "")
                for field in ("kind", "domain"):
                    setattr(info, field, r.get(field) or getattr(info, field))
                if "stage" in r:
                    info.stage = int(r["stage"]) if info.stage < 0 else info.stage

    @contextlib.contextmanager
    def batch(self):
        """Records this thread appends inside the block are written together when it ends: one write and fsync,
        one segment object on object storage (a PUT per record made an offline teacher's chunk of n requests
        3n PUTs). They count at once (budget checks see them); the caller must act on none of them (send a
        request) before the block ends. Other threads' appends are written as usual."""
        if getattr(self._batch, "records", None) is not None:  # nested: the outer block writes
            yield
            return
        self._batch.records = []
        try:
            yield
        finally:
            records, self._batch.records = self._batch.records, None
            with self._lock:
                self._write(records)

    def _append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        pending = getattr(self._batch, "records", None)
        if pending is not None:
            pending.extend(records)
        else:
            self._write(records)
        for r in records:
            self._apply(r)

    def _write(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        if self._log is not None:
            self._log.append(text.encode("utf-8"))
            self._content += text.encode("utf-8")
        else:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    # ------------------------------------------------------------------------------- queries

    @property
    def spent(self) -> float:
        """Settled amounts + bounds of attempts still open: what the budget check counts."""
        with self._lock:
            return self._committed

    @property
    def remaining(self) -> float:
        return self.budget - self.spent

    def open_count(self) -> int:
        with self._lock:
            return self._open

    def is_done(self, key: str) -> bool:
        info = self.requests.get(key)
        return bool(info and info.status)

    def status(self, key: str) -> str | None:
        info = self.requests.get(key)
        return info.status if info and info.status else None

    def key_charged(self, key: str) -> bool:
        """Whether the request already costs something (a charged or open attempt): calls charge once."""
        with self._lock:
            return any(not a.outcome or a.outcome in CHARGED for a in self._by_key.get(key, ()))

    def next_attempt(self, key: str) -> int:
        with self._lock:
            return 1 + max((a.attempt for a in self._by_key.get(key, ())), default=-1)

    def mean_charge(self) -> float | None:
        """Mean charge per request that reached a teacher (None before the first): the planning unit cost."""
        per_key: dict[str, float] = collections.defaultdict(float)
        with self._lock:
            for a in self.attempts.values():
                if a.outcome in CHARGED:
                    per_key[a.key] += a.amount
        return sum(per_key.values()) / len(per_key) if per_key else None

    # ------------------------------------------------------------------------------- writes

    def open(
        self, key: str, attempt: int, *, kind: str, domain: str, stage: int, estimate: float, bound: float, wait: bool
    ) -> bool:
        """Opens an attempt if `bound` fits what is left; False if it does not.

        With `wait`, a bound that does not fit waits while other attempts are open (their settlement
        usually frees budget: a bound is a worst case) and fails only when none is left open.
        """
        with self._lock:
            while self._committed + bound > self.budget + 1e-9:
                if not wait or not self._open:
                    return False
                self._lock.wait(timeout=1.0)
            self._append(
                [
                    dict(
                        op="sent",
                        key=key,
                        attempt=attempt,
                        kind=kind,
                        domain=domain,
                        stage=stage,
                        estimate=estimate,
                        bound=bound,
                        time=round(time.time(), 3),
                    )
                ]
            )
            return True

    def wait_settle(self, timeout_s: float) -> bool:
        """Waits for an open attempt to settle; False at once when none is open (nothing will free budget)."""
        with self._lock:
            if not self._open:
                return False
            self._lock.wait(timeout=timeout_s)
            return True

    def settle(
        self,
        key: str,
        attempt: int,
        outcome: str,
        amount: float,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        usd: float | None = None,
        reason: str = "",
    ) -> None:
        record = dict(op="settle", key=key, attempt=attempt, outcome=outcome, amount=amount)
        record.update(input_tokens=input_tokens, output_tokens=output_tokens, reason=reason)
        if usd is not None:
            record["usd"] = usd
        with self._lock:
            self._append([record])
            self._lock.notify_all()

    def finish(self, key: str, status: str, source: str, *, kind: str = "", domain: str = "", stage: int = -1) -> None:
        with self._lock:
            if not self.is_done(key):
                self._append(
                    [dict(op="done", key=key, status=status, source=source, kind=kind, domain=domain, stage=stage)]
                )

    def summary(self) -> dict[str, Any]:
        """Totals and per-stage counts for logs and report.json (see spend.stage_line)."""
        with self._lock:
            attempts, requests = list(self.attempts.values()), dict(self.requests)
        return ledger_summary.summarize(attempts, requests, self.unit, self.budget, self.unknown_at_open)

    def close(self) -> None:
        if self._log is None:
            self._file.close()
        else:
            with self._lock:
                self._log.compact(bytes(self._content))
