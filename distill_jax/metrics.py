"""Answer extraction, SQuAD-style EM/F1 and per-domain, head/tail aggregation.

A distilled student is trained to write a rationale and then its answer, so a
prediction is scored on the answer it ends with, not on the rationale text. The
scores are then kept per domain, because the point of distilling a long-tailed
teacher corpus is to see what happens to the rare domains, which a single global
mean hides: a student that nails the head domains and fails every tail domain can
still post a high micro average. Following BalDistill, the largest domains that
together hold most of the training data are called *head* and the rest *tail*
(:func:`split_head_tail`), and results are reported for both groups.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

# Regexes marking where an answer starts, case-insensitive. A marker ending in "{"
# opens a brace group and the answer is its balanced contents; any other answer
# runs to the end of its sentence or line. "answer is" covers the trainer's own
# template, "... So the answer is X.", as well as "The (final) answer is X".
DEFAULT_ANSWER_PATTERNS: tuple[str, ...] = (
    r"\banswer\s+is\s*:?",
    r"\banswer\s*:",
    r"\\boxed\s*\{",
    r"####",
)

# Characters peeled off both ends of an extracted answer ("$85$", "'tenalp'").
_WRAPPERS = "\"'`$\u2018\u2019\u201c\u201d"
# The answer after a marker (possibly on the next line) ends with its sentence, at
# ., ! or ? followed by whitespace, or with its line; so "3.5" survives whole.
_SENTENCE = re.compile(r"\s*(.*?)(?:[.!?](?=\s|$)|$)", re.MULTILINE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _balanced_group(text: str, start: int) -> str | None:
    """Contents of the brace group opened just before ``start``; None if unclosed."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def _clean(answer: str) -> str:
    """Strip whitespace, trailing periods and wrapping quotes/``$`` until stable."""
    previous = None
    while answer != previous:
        previous = answer
        answer = answer.strip().rstrip(".").strip().strip(_WRAPPERS)
    return answer


def extract_answer(text: str, patterns: Sequence[str] = DEFAULT_ANSWER_PATTERNS) -> str:
    """Return the final answer stated in a rationale-style ``text``.

    Every match of every pattern is a candidate and the one starting last wins,
    since models restate and correct themselves. Candidates with an empty or
    unclosed answer are skipped. Without any usable match the whole text is the
    answer. The result is stripped of whitespace, a trailing period and
    surrounding quotes or ``$``.
    """
    candidates: list[tuple[int, str]] = []
    for pattern in patterns:
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            if match.group().endswith("{"):
                answer = _balanced_group(text, match.end())
            else:
                answer = _SENTENCE.match(text, match.end()).group(1)
            if answer is not None and _clean(answer):
                candidates.append((match.start(), answer))
    if not candidates:
        return _clean(text)
    return _clean(max(candidates, key=lambda c: c[0])[1])


def named_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a classification rationale concludes with: the stated answer when it names one,
    else the label mentioned last (longest first at the same place, so "money-fx" beats "money").

    Labels and text compare after `normalize_answer`; None when no label is named.
    """
    normalized = {normalize_answer(label): label for label in labels if normalize_answer(label)}
    stated = normalize_answer(extract_answer(text))
    if stated in normalized:
        return normalized[stated]
    body = normalize_answer(text)
    best: tuple[int, int, str] | None = None
    for key, label in normalized.items():
        for match in re.finditer(rf"(?<!\S){re.escape(key)}(?!\S)", body):
            candidate = (match.end(), len(key), label)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    return best[2] if best else None


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse spaces.

    As in the SQuAD script punctuation is deleted, not replaced, so "3.5" and "35"
    (or "-5" and "5") normalise to the same string.
    """
    s = s.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of the normalised strings (SQuAD / BalDistill).

    Tokens are whitespace-separated words counted with multiplicity. If either side
    normalises to nothing, the score is 1.0 only when both do.
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


@dataclasses.dataclass(frozen=True)
class Scored:
    """One decoded example: its texts and the answers extracted from them."""

    prediction: str
    reference: str
    answer: str
    reference_answer: str


# Per-example answer metrics by name, each in [0, 1]. The train-time evaluator, the stage evals and
# `eval --predictions` average every one of them per domain: adding a metric is one entry here.
ANSWER_METRICS: dict[str, Callable[[Scored], float]] = {
    "exact_match": lambda s: exact_match(s.prediction, s.reference),  # the whole output
    "answer_accuracy": lambda s: exact_match(s.answer, s.reference_answer),
    "answer_f1": lambda s: token_f1(s.answer, s.reference_answer),  # BalDistill's QA metric
}


def score_answer(
    prediction: str, reference: str, patterns: Sequence[str] = DEFAULT_ANSWER_PATTERNS
) -> tuple[Scored, dict[str, float]]:
    """The extracted answers of one example and its ANSWER_METRICS."""
    scored = Scored(prediction, reference, extract_answer(prediction, patterns), extract_answer(reference, patterns))
    return scored, {name: float(metric(scored)) for name, metric in ANSWER_METRICS.items()}


def split_head_tail(domain_counts: Mapping[str, int], head_fraction: float = 0.5) -> tuple[list[str], list[str]]:
    """Split domains into BalDistill's head and tail groups by training-set size.

    The head is the smallest set of largest domains that together hold at least
    ``head_fraction`` of all training examples (domains ordered by count, then
    name, so ties are deterministic); the tail is everything else. Both lists come
    back in that order.
    """
    if not 0 < head_fraction <= 1:
        raise ValueError(f"head_fraction must be in (0, 1], got {head_fraction}")
    if any(n < 0 for n in domain_counts.values()):
        raise ValueError("domain counts must be non-negative")
    total = sum(domain_counts.values())
    if total == 0:
        raise ValueError("cannot split domains with no training examples")
    ordered = sorted(domain_counts, key=lambda d: (-domain_counts[d], d))
    head_size = covered = 0
    while covered < head_fraction * total:
        covered += domain_counts[ordered[head_size]]
        head_size += 1
    return ordered[:head_size], ordered[head_size:]


def _group_means(
    per_domain: Mapping[str, Mapping[str, float]], domains: Sequence[str], weighted: bool
) -> dict[str, float]:
    """Mean of each metric over ``domains``, optionally weighted by their counts.

    A domain missing a metric, or missing from ``per_domain``, is left out of that
    mean; one without a ``"count"`` weighs nothing in a weighted mean. The group's
    total ``"count"`` is included.
    """
    present = [d for d in domains if d in per_domain]
    metrics = sorted({m for d in present for m in per_domain[d] if m != "count"})
    out: dict[str, float] = {}
    for metric in metrics:
        having = [d for d in present if metric in per_domain[d]]
        weights = [per_domain[d].get("count", 0) if weighted else 1.0 for d in having]
        if sum(weights) > 0:
            out[metric] = float(np.average([per_domain[d][metric] for d in having], weights=weights))
    out["count"] = sum(per_domain[d].get("count", 0) for d in present)
    return out


def aggregate(
    per_domain: Mapping[str, Mapping[str, float]], head: Sequence[str], tail: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Summaries of ``per_domain`` results (``{domain: {metric: mean, "count": n}}``).

    ``"macro"`` averages the domain means (every domain counts the same, so the
    tail is visible), ``"micro"`` weights them by example count (the plain
    per-example mean), and ``"head"`` / ``"tail"`` are macro averages over those
    groups. Each summary also carries the total ``"count"`` of examples it covers.
    """
    domains = sorted(per_domain)
    return {
        "macro": _group_means(per_domain, domains, weighted=False),
        "micro": _group_means(per_domain, domains, weighted=True),
        "head": _group_means(per_domain, head, weighted=False),
        "tail": _group_means(per_domain, tail, weighted=False),
    }


def format_domain_table(
    per_domain: Mapping[str, Mapping[str, float]],
    aggregates: Mapping[str, Mapping[str, float]],
    domain_counts: Mapping[str, int],
    head: Sequence[str],
    metrics: Sequence[str],
) -> str:
    """A fixed-width table for the console, one row per domain, then the summaries.

    Domains (from ``domain_counts`` and ``per_domain``) are sorted by training
    count, largest first, so the long tail reads top to bottom. Columns: domain,
    head/tail group, training examples, evaluated examples, then ``metrics``.
    The summary rows are head, tail, macro and micro from ``aggregates``. Missing
    values print as "-".
    """
    head_set = set(head)
    domains = sorted(set(domain_counts) | set(per_domain), key=lambda d: (-domain_counts.get(d, 0), d))

    def values(result: Mapping[str, float] | None) -> list[str]:
        result = result or {}
        evaluated = str(int(result["count"])) if "count" in result else "-"
        return [evaluated] + [f"{result[m]:.4f}" if m in result else "-" for m in metrics]

    rows = [
        [d, "head" if d in head_set else "tail", str(domain_counts.get(d, "-"))] + values(per_domain.get(d))
        for d in domains
    ]
    summary = []
    for name in ("head", "tail", "macro", "micro"):
        if name in ("macro", "micro"):
            members = domains
        else:
            members = [d for d in domains if (d in head_set) == (name == "head")]
        train_total = str(sum(domain_counts.get(d, 0) for d in members))
        summary.append([name, "", train_total] + values(aggregates.get(name)))

    header = ["domain", "group", "train", "eval"] + list(metrics)
    widths = [max(len(row[i]) for row in [header] + rows + summary) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Text columns (domain, group) align left, numbers align right.
        padded = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded)

    rule = "-" * len(line(header))
    body = [line(r) for r in rows]
    return "\n".join([line(header), rule, *body, rule, *(line(r) for r in summary)])
