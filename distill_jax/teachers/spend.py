"""One spend model for every teacher call site: what an attempt may cost, what it did cost.

`Budget` sits between a caller (the stage scheduler, paraphrase-corpus, moderation) and the
ledger. Before each HTTP attempt it opens a ledger entry whose `bound` is the most the attempt can
bill: the prompt's length in UTF-8 bytes + a message overhead (a byte-level BPE token is at least
one byte, so this bounds the provider's prompt count) plus the completion cap sent as
`max_tokens`. When little budget is left the cap shrinks to what fits -- but never below the
run's own p95 completion length (max_tokens until enough completions were seen), since a reply
cut short would be paid and useless. So the last calls of a budget are still made when they fit,
and spent never passes the budget. The attempt then settles to the provider's `usage`, or to its
bound when a reply may have been billed but was not read (`unread`).

Units: calls, tokens (input + output) or usd (`teacher.prices`, USD per million input/output
tokens of each model; an unknown model is an error before anything is sent).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Sequence
from typing import Any

from absl import logging

from distill_jax.config import ConfigError
from distill_jax.teachers.base import Request, Response
from distill_jax.teachers.ledger import Ledger

# Chat framing the provider adds around one user message (role markers, priming): ~7 for OpenAI.
MESSAGE_OVERHEAD_TOKENS = 16
# Completions seen before the running p95 replaces max_tokens as the completion estimate.
MIN_OBSERVATIONS = 8
COMPLETION_WINDOW = 1000


class BudgetConfigError(ConfigError):
    """The budget settings cannot work (bad unit, unknown model price): nothing was sent."""


@dataclasses.dataclass(frozen=True)
class Price:
    """USD per million tokens, as providers publish them."""

    input_per_mtok: float
    output_per_mtok: float

    def usd(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


def parse_prices(spec: str) -> dict[str, Price]:
    """`"model=IN/OUT,model2=IN/OUT"` (USD per million input/output tokens) -> {model: Price}."""
    prices = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        try:
            model, rates = item.rsplit("=", 1)
            rate_in, rate_out = (float(x) for x in rates.split("/"))
        except ValueError:
            raise BudgetConfigError(
                f"teacher.prices entry {item!r} is not MODEL=IN/OUT (USD per million input/output tokens)"
            ) from None
        if rate_in < 0 or rate_out < 0:
            raise BudgetConfigError(f"teacher.prices entry {item!r}: rates must be >= 0")
        prices[model.strip()] = Price(rate_in, rate_out)
    return prices


def price_for(unit: str, model: str, prices_spec: str) -> Price | None:
    """The model's price; BudgetConfigError when the unit is usd and the table does not name it."""
    prices = parse_prices(prices_spec)
    if model in prices:
        return prices[model]
    if unit == "usd":
        known = ", ".join(sorted(prices)) or "none"
        raise BudgetConfigError(
            f"distill.budget_unit=usd but teacher.prices has no price for model {model!r} (priced: {known}); "
            f"add --config.teacher.prices='{model}=IN/OUT' in USD per million input/output tokens"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclasses.dataclass(frozen=True)
class Ticket:
    """An open attempt: send it with `max_tokens=cap`; settle it with Budget.settle."""

    key: str
    attempt: int
    cap: int
    prompt_bound: int
    bound: float


class Budget:
    """Meters one ledger for one caller; thread-safe (the HTTP teacher's workers share it)."""

    def __init__(self, ledger: Ledger, *, max_tokens: int, price: Price | None, stage: int = 0):
        if ledger.unit == "usd" and price is None:
            raise BudgetConfigError("a usd budget needs the model's price (teacher.prices)")
        self.ledger = ledger
        self.unit = ledger.unit
        self.max_tokens = int(max_tokens)
        self.price = price
        self.stage = stage
        # The run's recent completion lengths: the p95 follows the current prompts, and stays cheap to sort.
        self._completions: collections.deque[int] = collections.deque(maxlen=COMPLETION_WINDOW)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ estimates

    @staticmethod
    def prompt_bound(prompt: str) -> int:
        return len(prompt.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS

    def completion_estimate(self) -> int:
        """max_tokens until MIN_OBSERVATIONS completions were seen, then their p95 (never above max_tokens)."""
        with self._lock:
            seen = sorted(self._completions)
        if len(seen) < MIN_OBSERVATIONS:
            return self.max_tokens
        return max(1, min(self.max_tokens, seen[math.ceil(0.95 * len(seen)) - 1]))

    def cost(self, input_tokens: float, output_tokens: float, *, key: str | None = None) -> float:
        """In the ledger's unit; calls: one per request, so a key already charged costs nothing more."""
        if self.unit == "calls":
            return 0.0 if key is not None and self.ledger.key_charged(key) else 1.0
        if self.unit == "tokens":
            return float(input_tokens + output_tokens)
        return self.price.usd(input_tokens, output_tokens)

    def estimate(self, prompt: str) -> float:
        """Expected cost of one request (planning, dry runs): prompt bytes/4 + the completion estimate."""
        return self.cost(len(prompt.encode("utf-8")) / 4 + MESSAGE_OVERHEAD_TOKENS, self.completion_estimate())

    # ------------------------------------------------------------------------------ attempts

    def open(self, key: str, kind: str, domain: str, prompt: str, *, wait: bool = True) -> Ticket | None:
        """Opens the next attempt of request `key` (its ledger `sent` line on disk); None when it cannot fit.

        The bound is the prompt's byte bound + a completion cap: max_tokens, or what is left when that
        is less -- never below the completion estimate. With `wait`, a bound that does not fit waits for
        this process's open attempts to settle (a bound is a worst case; settling frees the rest).
        """
        attempt = self.ledger.next_attempt(key)
        prompt_bound = self.prompt_bound(prompt)
        while True:
            floor = min(self.completion_estimate(), self.max_tokens)
            cap = self.max_tokens
            if self.unit != "calls" and self.cost(prompt_bound, cap) > self.ledger.remaining:
                cap = max(floor, min(cap, self._largest_cap(prompt_bound, self.ledger.remaining)))
            bound = self.cost(prompt_bound, cap, key=key)
            estimate = min(bound, self.cost(prompt_bound / 4, floor, key=key))
            if self.ledger.open(
                key, attempt, kind=kind, domain=domain, stage=self.stage, estimate=estimate, bound=bound, wait=False
            ):
                return Ticket(key, attempt, cap, prompt_bound, bound)
            if not wait or not self.ledger.wait_settle(timeout_s=1.0):
                return None

    def _largest_cap(self, prompt_bound: int, room: float) -> int:
        if self.unit == "tokens":
            return int(math.floor(room - prompt_bound))
        left = room - self.price.usd(prompt_bound, 0)
        return (
            int(math.floor(left / self.price.output_per_mtok * 1e6)) if self.price.output_per_mtok else self.max_tokens
        )

    def settle(self, ticket: Ticket, outcome: str, usage: Usage | None = None, reason: str = "") -> float:
        """outcome: billed (usage from the reply), unread (charged at the bound), free (nothing billed)."""
        if outcome == "billed" and usage is None:
            raise ValueError("a billed attempt needs its usage")
        if outcome == "billed":
            amount = self.cost(usage.input_tokens, usage.output_tokens) if self.unit != "calls" else ticket.bound
            tokens = (usage.input_tokens, usage.output_tokens)
            with self._lock:
                self._completions.append(usage.output_tokens)
            if amount > ticket.bound + 1e-9:
                logging.warning(
                    "teacher billed %.6g %s for a call bounded at %.6g (prompt %d + completion %d tokens)",
                    amount,
                    self.unit,
                    ticket.bound,
                    *tokens,
                )
        elif outcome == "unread":
            amount, tokens = ticket.bound, (ticket.prompt_bound, ticket.cap)
        elif outcome == "free":
            amount, tokens = 0.0, (0, 0)
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
        usd = self.price.usd(*tokens) if self.price is not None else None
        self.ledger.settle(
            ticket.key,
            ticket.attempt,
            outcome,
            amount,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            usd=usd,
            reason=reason,
        )
        return amount

    def charge_cached(self, request: Request, usage: Usage) -> bool:
        """A cached answer this ledger has not paid for yet costs what it was billed; False if it does not fit."""
        if self.ledger.key_charged(request.key) or self.ledger.is_done(request.key):
            return True
        amount = self.cost(usage.input_tokens, usage.output_tokens, key=request.key)
        attempt = self.ledger.next_attempt(request.key)
        opened = self.ledger.open(
            request.key,
            attempt,
            kind=request.kind,
            domain=request.domain,
            stage=self.stage,
            estimate=amount,
            bound=amount,
            wait=True,
        )
        if opened:
            usd = self.price.usd(usage.input_tokens, usage.output_tokens) if self.price else None
            self.ledger.settle(
                request.key,
                attempt,
                "cache",
                amount,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                usd=usd,
            )
        return opened

    def finish(self, request: Request, response: Response, source: str) -> None:
        self.ledger.finish(
            request.key, response.status, source, kind=request.kind, domain=request.domain, stage=self.stage
        )


def budget_for(cfg: Any, ledger: Ledger, stage: int, teacher: Any = None) -> Budget:
    """The Budget for `ledger` under config `cfg` (teacher.model, teacher.max_tokens, teacher.prices)."""
    model = getattr(teacher, "model", None) or cfg.teacher.model
    # Stored (pool), exact (program) and local teachers bill nothing: dollars are shown only for a provider's
    # model (or asked for with a usd budget, which then needs the price).
    billed = cfg.teacher.kind == "openai" or ledger.unit == "usd"
    return Budget(
        ledger,
        max_tokens=int(getattr(teacher, "max_tokens", None) or cfg.teacher.max_tokens),
        price=price_for(ledger.unit, model, cfg.teacher.prices) if billed else None,
        stage=stage,
    )


def default_request_cost(cfg: Any, unit: str) -> float:
    """A request's expected cost before any was made: a ~256-token prompt and the completion cap."""
    if unit == "calls":
        return 1.0
    tokens_in, tokens_out = 256 + MESSAGE_OVERHEAD_TOKENS, int(cfg.teacher.max_tokens)
    if unit == "tokens":
        return float(tokens_in + tokens_out)
    return price_for(unit, cfg.teacher.model, cfg.teacher.prices).usd(tokens_in, tokens_out)


def preflight(cfg: Any, teacher: Any) -> None:
    """Before stage 0: the budget settings parse and price the model, and the teacher can work at all."""
    unit = cfg.distill.budget_unit
    if unit not in ("calls", "tokens", "usd"):
        raise BudgetConfigError(f"distill.budget_unit={unit!r}: use calls, tokens or usd")
    price_for(unit, getattr(teacher, "model", None) or cfg.teacher.model, cfg.teacher.prices)
    check = getattr(teacher, "preflight", None)
    if check is not None:
        check()


def buy(teacher: Any, requests: Sequence[Request], budget: Budget) -> tuple[list[Request], list[Response]]:
    """(requests bought or re-issued, their responses), in order; stops where the budget does.

    A metered teacher (HTTP) meters every attempt itself; others are metered per request here.
    Raises BudgetConfigError when the budget is below one call's worst case, so nothing could ever be bought.
    """
    if not getattr(teacher, "metered", False):
        allowed, responses = buy_offline(teacher, requests, budget)
    else:
        responses = teacher.complete(requests, budget)
        pairs = [(q, r) for q, r in zip(requests, responses) if r.status != "skipped"]
        allowed, responses = [q for q, _ in pairs], [r for _, r in pairs]
    if requests and not allowed and budget.ledger.spent == 0:
        prompt = getattr(teacher, "prompt", lambda r: "")(requests[0])
        worst = budget.cost(budget.prompt_bound(prompt), budget.max_tokens)
        raise BudgetConfigError(
            f"distill.budget={budget.ledger.budget:g} {budget.unit} is below one call's worst case ({worst:.6g}: "
            f"the prompt's bytes + teacher.max_tokens={budget.max_tokens}); raise the budget or lower max_tokens"
        )
    return allowed, responses


def buy_offline(teacher: Any, requests: Sequence[Request], budget: Budget) -> tuple[list[Request], list[Response]]:
    """Meters a teacher without HTTP attempts (pool, program, local): one attempt per request.

    The bound of a request is the configured completion cap (its prompt is not sent anywhere); the
    charge is the response's `tokens` (calls: 1), never above the bound; `unavailable` is free.
    """
    allowed: list[Request] = []
    tickets: list[Ticket] = []
    with budget.ledger.batch():  # The `sent` records of the chunk: one write, done before anything is asked.
        for request in requests:
            if budget.ledger.is_done(request.key):
                allowed.append(request)
                tickets.append(None)
                continue
            ticket = budget.open(request.key, request.kind, request.domain, "", wait=False)
            if ticket is None:
                break
            allowed.append(request)
            tickets.append(ticket)
    responses = teacher.complete(allowed) if allowed else []
    with budget.ledger.batch():
        for request, response, ticket in zip(allowed, responses, tickets):
            if ticket is not None:
                if response.status == "unavailable":
                    budget.settle(ticket, "free", reason="unavailable")
                else:
                    tokens = min(int(response.tokens), ticket.cap) if response.tokens else ticket.cap
                    budget.settle(ticket, "billed", Usage(0, tokens))
            budget.finish(request, response, "cache" if response.cached else "paid")
    return allowed, responses


def stage_line(ledger: Ledger, stage: int) -> str:
    """One log line: requests, retries by reason, cache hits, spent by unit, reserved, left."""
    s = ledger.summary()
    row = s["stages"].get(str(stage), {})
    retries = row.get("retries", {})
    return (
        f"stage {stage}: {row.get('requests', 0)} requests ({row.get('attempts', 0)} attempts, "
        f"{row.get('cache_hits', 0)} cache hits, {row.get('dedup', 0)} deduplicated, {row.get('failed', 0)} failed); "
        f"retries {sum(retries.values())} {dict(sorted(retries.items()))}; outcomes {row.get('outcomes', {})}; "
        f"spent {row.get('spent', 0.0):.6g} {ledger.unit} (tokens in {row.get('input_tokens', 0)} / out "
        f"{row.get('output_tokens', 0)}, usd {row.get('usd', 0.0):.6g}); reserved {row.get('reserved', 0.0):.6g}; "
        f"left {s['left']:.6g} of {s['budget']:.6g} {ledger.unit}"
    )
