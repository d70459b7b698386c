"""A deterministic, long-tailed teacher corpus for the ``distill-jax demo`` command.

The demo has to show, on a CPU in minutes and without data files, the problem this trainer exists
for: a teacher corpus whose domains are wildly unbalanced, where a student trained on a uniform
sample of it never learns the rare domains. So the corpus is generated here, from a seed, as ten
small tasks whose sizes follow a power law over their rank in :data:`DOMAINS`: the two head domains
hold most rows and the tail domains a few dozen each.

The tasks are chosen so that a tiny byte-level student (0.9M parameters) *can* learn each of them
from a few dozen examples, and cannot from a handful: each answer is an order statistic or a set
complement of the symbols in the input (smallest digit, largest odd digit, the missing letter, ...),
which an encoder-decoder computes without locating positions. Tasks that need position-wise copying
(reversing, first letter, carrying digits) need thousands of examples at this size, so they would
show only that nothing is learned (measured: BUILD_NOTES.md, "The demo"). Every row carries a short
correct teacher rationale and a one- or two-byte answer, in the canonical schema ``{"id", "domain",
"input", "target", "rationale", "meta"}``; the demo trains on the answers (``{target}``).

Randomness comes from ``random.Random`` seeded through SHA-256, never from ``hash()``, so the same
arguments give byte-identical files on every run and platform.
"""

from __future__ import annotations

import hashlib
import os
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distill_jax import atomic

MAX_INPUT_BYTES = 40
MAX_TARGET_BYTES = 4
MAX_RATIONALE_BYTES = 64
# Smallest size any domain gets, so even the far tail is large enough to show up in per-domain reports.
MIN_DOMAIN_SIZE = 12
# How many duplicate draws in a row mean a domain has run out of distinct inputs.
_MAX_CONSECUTIVE_DUPLICATES = 10_000

_DIGITS = string.digits
# The letter tasks use a-j: ten symbols, like the digits. Over all 26 letters a tiny student needs
# roughly twice the examples per task (measured), more than balanced quotas can buy at the demo's budget.
_LETTERS = string.ascii_lowercase[:10]


@dataclass(frozen=True)
class DomainSpec:
    """One task of the demo corpus.

    ``generate`` draws one example from ``rng`` and returns ``(input, rationale, target)``; the
    rationale must reach ``target``.
    """

    name: str
    generate: Callable[[random.Random], tuple[str, str, str]]


def _digits(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice(_DIGITS) for _ in range(n))


def _listed(symbols: str) -> str:
    return ", ".join(symbols)


def _min_digit(rng: random.Random) -> tuple[str, str, str]:
    n = _digits(rng)
    return f"Smallest digit in {n}?", f"Digits {_listed(n)}; the smallest is {min(n)}.", min(n)


def _max_digit(rng: random.Random) -> tuple[str, str, str]:
    n = _digits(rng)
    return f"Largest digit in {n}?", f"Digits {_listed(n)}; the largest is {max(n)}.", max(n)


def _with_parity(rng: random.Random, odd: bool) -> tuple[str, str]:
    while True:
        n = _digits(rng)
        kept = "".join(sorted(c for c in n if int(c) % 2 == odd))
        if kept:
            return n, kept


def _max_odd_digit(rng: random.Random) -> tuple[str, str, str]:
    n, odd = _with_parity(rng, odd=True)
    return f"Largest odd digit in {n}?", f"Odd digits {_listed(odd)}; the largest is {odd[-1]}.", odd[-1]


def _min_even_digit(rng: random.Random) -> tuple[str, str, str]:
    n, even = _with_parity(rng, odd=False)
    return f"Smallest even digit in {n}?", f"Even digits {_listed(even)}; the smallest is {even[0]}.", even[0]


def _median(rng: random.Random, symbols: str, noun: str) -> tuple[str, str, str]:
    a, b, c = rng.sample(symbols, 3)
    ordered = "".join(sorted((a, b, c)))
    return f"Middle {noun} of {a}, {b}, {c}?", f"In order {_listed(ordered)}; the middle is {ordered[1]}.", ordered[1]


def _missing(rng: random.Random, symbols: str, question: str, span: str) -> tuple[str, str, str]:
    shown = rng.sample(symbols, len(symbols) - 1)
    missing = (set(symbols) - set(shown)).pop()
    return f"{question}: {''.join(shown)}?", f"{span} without {missing}.", missing


def _median_digit(rng: random.Random) -> tuple[str, str, str]:
    return _median(rng, _DIGITS, "value")


def _missing_digit(rng: random.Random) -> tuple[str, str, str]:
    return _missing(rng, _DIGITS, "Which digit is missing", "0 to 9")


def _earliest_letter(rng: random.Random) -> tuple[str, str, str]:
    w = "".join(rng.sample(_LETTERS, 5))
    return f"Earliest letter in '{w}'?", f"Sorted: {''.join(sorted(w))}; first is {min(w)}.", min(w)


def _latest_letter(rng: random.Random) -> tuple[str, str, str]:
    w = "".join(rng.sample(_LETTERS, 5))
    return f"Latest letter in '{w}'?", f"Sorted: {''.join(sorted(w))}; last is {max(w)}.", max(w)


def _median_letter(rng: random.Random) -> tuple[str, str, str]:
    return _median(rng, _LETTERS, "letter")


def _missing_letter(rng: random.Random) -> tuple[str, str, str]:
    return _missing(rng, _LETTERS, "Which of a-j is missing", "a to j")


# Ordered head first: a domain's size is set by its rank in this tuple.
DOMAINS: tuple[DomainSpec, ...] = (
    DomainSpec("min_digit", _min_digit),
    DomainSpec("max_digit", _max_digit),
    DomainSpec("max_odd_digit", _max_odd_digit),
    DomainSpec("min_even_digit", _min_even_digit),
    DomainSpec("median_digit", _median_digit),
    DomainSpec("missing_digit", _missing_digit),
    DomainSpec("earliest_letter", _earliest_letter),
    DomainSpec("latest_letter", _latest_letter),
    DomainSpec("median_letter", _median_letter),
    DomainSpec("missing_letter", _missing_letter),
)


def domain_sizes(num_train: int, num_domains: int, zipf_exponent: float) -> list[int]:
    """Split ``num_train`` rows over ranked domains as ``size_k ∝ k ** -zipf_exponent``.

    Domains whose share would fall below :data:`MIN_DOMAIN_SIZE` are raised to it and
    the rest is shared by the others in the same proportions (water-filling), then
    rounded by largest remainder so the sizes sum to exactly ``num_train``. The
    result is non-increasing in rank. ``zipf_exponent=0`` gives equal sizes.
    """
    if num_domains < 1:
        raise ValueError(f"num_domains must be >= 1, got {num_domains}")
    if zipf_exponent < 0:
        raise ValueError(f"zipf_exponent must be >= 0, got {zipf_exponent}")
    if num_train < num_domains * MIN_DOMAIN_SIZE:
        raise ValueError(f"num_train={num_train} cannot give {num_domains} domains {MIN_DOMAIN_SIZE} rows each")
    weights = [rank**-zipf_exponent for rank in range(1, num_domains + 1)]
    # Weights decrease with rank, so the clamped domains are always a tail suffix.
    free = num_domains
    while True:
        budget = num_train - (num_domains - free) * MIN_DOMAIN_SIZE
        total_weight = sum(weights[:free])
        shares = [budget * w / total_weight for w in weights[:free]]
        if free == 1 or shares[-1] >= MIN_DOMAIN_SIZE:
            break
        free -= 1
    sizes = [int(share) for share in shares]
    by_remainder = sorted(range(free), key=lambda i: (sizes[i] - shares[i], i))
    for i in by_remainder[: budget - sum(sizes)]:
        sizes[i] += 1
    return sizes + [MIN_DOMAIN_SIZE] * (num_domains - free)


def _domain_rng(seed: int, name: str) -> random.Random:
    """An RNG per (seed, domain): a domain's examples depend on nothing else, so
    changing sizes only extends or truncates each domain's sequence of examples."""
    digest = hashlib.sha256(f"distill_jax.demo:{seed}:{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _draw_distinct(spec: DomainSpec, rng: random.Random, count: int, taken: set[str]) -> list[tuple[str, str, str]]:
    """Draw ``count`` examples whose inputs are new to ``taken`` (which is updated)."""
    examples: list[tuple[str, str, str]] = []
    duplicates = 0
    while len(examples) < count:
        example = spec.generate(rng)
        if example[0] in taken:
            duplicates += 1
            if duplicates > _MAX_CONSECUTIVE_DUPLICATES:
                raise ValueError(
                    f"domain {spec.name!r} ran out of distinct inputs after {len(taken)}; "
                    "ask for fewer train or test rows"
                )
            continue
        duplicates = 0
        taken.add(example[0])
        examples.append(example)
    return examples


def _row(spec: DomainSpec, rank: int, split: str, index: int, example: tuple[str, str, str]) -> dict[str, Any]:
    question, rationale, target = example
    if (
        len(question.encode()) > MAX_INPUT_BYTES
        or len(target.encode()) > MAX_TARGET_BYTES
        or len(rationale.encode()) > MAX_RATIONALE_BYTES
    ):
        raise ValueError(f"domain {spec.name!r} produced an over-long example: {question!r} -> {rationale!r}")
    return {
        "id": f"{spec.name}-{split}-{index:05d}",
        "domain": spec.name,
        "input": question,
        "target": target,
        "rationale": rationale,
        "meta": {"source": "distill_jax.demo", "split": split, "domain_rank": rank},
    }


def generate_demo_corpus(
    seed: int = 0,
    num_train: int = 6000,
    num_test_per_domain: int = 50,
    zipf_exponent: float = 2.5,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generate ``(train_rows, test_rows)`` for :data:`DOMAINS`.

    Train sizes come from :func:`domain_sizes`; with the defaults the top three
    domains hold 88% of the 6000 rows and the bottom four 39 to 79 rows each. The
    test split is balanced (``num_test_per_domain`` per domain) so tail domains can
    be measured at all. Test rows are drawn first from each domain's own RNG, so
    the test split depends only on ``seed`` and ``num_test_per_domain`` and stays
    fixed while ``num_train`` or ``zipf_exponent`` vary; train rows never repeat a
    test input, and no input occurs twice. Train rows are shuffled (a prefix is a
    fair sample); test rows are grouped by domain. Raises ``ValueError`` when a
    domain cannot supply that many distinct inputs (the word tasks have
    ``len(WORDS)`` words).
    """
    if num_test_per_domain < 0:
        raise ValueError(f"num_test_per_domain must be >= 0, got {num_test_per_domain}")
    sizes = domain_sizes(num_train, len(DOMAINS), zipf_exponent)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for rank, (spec, size) in enumerate(zip(DOMAINS, sizes), start=1):
        rng = _domain_rng(seed, spec.name)
        taken: set[str] = set()
        for i, example in enumerate(_draw_distinct(spec, rng, num_test_per_domain, taken)):
            test.append(_row(spec, rank, "test", i, example))
        for i, example in enumerate(_draw_distinct(spec, rng, size, taken)):
            train.append(_row(spec, rank, "train", i, example))
    _domain_rng(seed, "shuffle").shuffle(train)
    return train, test


def write_demo_corpus(out_dir: str, **kwargs: Any) -> dict[str, str]:
    """Generate the corpus (``kwargs`` go to :func:`generate_demo_corpus`) and write
    ``train.jsonl`` and ``test.jsonl`` under ``out_dir``.

    Returns ``{"train": path, "test": path}``.
    """
    train, test = generate_demo_corpus(**kwargs)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"train": os.path.join(out_dir, "train.jsonl"), "test": os.path.join(out_dir, "test.jsonl")}
    atomic.write_jsonl(paths["train"], train)
    atomic.write_jsonl(paths["test"], test)
    return paths


def synthesize_examples(seed: int, domain: str, count: int, exclude: set[str]) -> list[tuple[str, str, str]]:
    """``count`` new ``(input, rationale, target)`` examples of ``domain`` whose inputs are not in ``exclude``.

    The sequence depends only on (seed, domain, exclude): asking for more extends it, so the
    i-th synthetic example of a domain is the same whenever it is asked for.
    """
    specs = {spec.name: spec for spec in DOMAINS}
    if domain not in specs:
        raise ValueError(f"the demo corpus has no domain {domain!r}; its domains are {sorted(specs)}")
    return _draw_distinct(specs[domain], _domain_rng(seed, f"{domain}/synthetic"), count, set(exclude))
