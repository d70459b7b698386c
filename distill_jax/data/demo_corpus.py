"""A deterministic, long-tailed teacher corpus for the ``distill-jax demo`` command.

The demo has to show distillation end to end on a CPU in minutes without shipping
data files, and it has to show the problem this trainer exists for: a teacher
corpus whose domains are wildly unbalanced. So the corpus is generated here, from
a seed, as ten small reasoning, arithmetic and string tasks whose sizes follow a
power law over their rank in :data:`DOMAINS`. A couple of head domains hold most of
the rows and the tail domains get a few dozen each. Every row carries a short,
correct, step-by-step teacher rationale and a final target, in the canonical schema
``{"id", "domain", "input", "target", "rationale", "meta"}``.

The tasks are sized for a tiny byte-level (ByT5-style, one token per UTF-8 byte)
student: every input fits in :data:`MAX_INPUT_BYTES` and every teacher output,
formatted with :data:`OUTPUT_TEMPLATE`, fits in :data:`MAX_OUTPUT_BYTES`.
Randomness comes from ``random.Random`` seeded through SHA-256, never from
``hash()``, so the same arguments give byte-identical files on every run and
platform.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_INPUT_BYTES = 64
MAX_OUTPUT_BYTES = 96
OUTPUT_TEMPLATE = "{rationale} So the answer is {target}."
# Smallest size any domain gets, so even the far tail is large enough to train on
# and to show up in per-domain reports.
MIN_DOMAIN_SIZE = 12
# How many duplicate draws in a row mean a domain has run out of distinct inputs.
_MAX_CONSECUTIVE_DUPLICATES = 10_000

# Words the string tasks operate on: common English, 3 to 8 lowercase letters. The
# last few have no a/e/i/o/u so that counting vowels sometimes gives 0.
WORDS: tuple[str, ...] = tuple(
    """
    apple river stone planet garden window candle forest orange silver pencil
    rocket bridge castle dragon island jacket ladder marble needle object parrot
    pepper rabbit saddle tablet turtle valley wallet yellow anchor basket butter
    carpet cotton desert engine falcon finger flower friend ginger hammer helmet
    jungle kettle kitten lemon lizard magnet meadow mirror monkey mother museum
    napkin noodle ocean office oyster paddle palace peanut pillow pirate pocket
    potato puzzle quartz ribbon salmon school shadow shovel singer spider spring
    square summer sunset tennis thread ticket timber tomato travel tunnel velvet
    violin walnut winter wizard zipper cactus banana cherry grape melon peach
    plum berry mango olive onion carrot celery radish squash bread cheese honey
    sugar flour salt water juice coffee cocoa table chair couch shelf drawer
    closet floor ceiling door wall house cabin tower fence porch attic cellar
    garage barn shed horse sheep goat camel zebra tiger lion bear wolf fox eagle
    robin crow swan goose duck owl hawk heron crane shark whale seal otter
    beaver badger moose deer mouse squirrel frog snake gecko beetle ant bee wasp
    moth snail worm cloud storm rain snow thunder breeze frost mist sun moon
    star comet galaxy meteor orbit gravity cosmos nebula pulsar quasar music
    piano guitar drum flute trumpet cello harp banjo organ paint brush canvas
    sketch poem story novel letter journal diary train plane boat truck wagon
    bicycle scooter canoe yacht ferry road street avenue lane path trail highway
    harbor airport station city town village county nation empire kingdom
    capital border king queen prince knight bishop pawn crown throne scepter
    doctor nurse farmer baker tailor sailor soldier teacher lawyer driver red
    blue green purple violet indigo crimson amber ivory ebony happy quiet gentle
    brave clever eager fancy jolly lucky proud swift calm bright dark heavy
    light sharp smooth rough soft jump run walk swim climb dance sing write read
    laugh build carry throw catch cook bake clean fix wash gold iron copper
    bronze nickel zinc tin lead steel chrome hill mountain canyon glacier
    volcano lagoon marsh prairie tundra savanna circle triangle cube sphere cone
    prism spiral arrow line point minute hour second morning evening night today
    season autumn decade number symbol signal pattern riddle secret answer
    reason button switch lever pulley wheel gear bolt screw hinge blanket
    sweater scarf glove mitten boot sandal slipper hat vest spoon fork knife
    plate bowl cup mug glass bottle jar lamp clock radio camera laptop phone
    screen cable battery router market bakery library hospital theater stadium
    factory chapel temple bank paper ink stamp folder binder eraser crayon
    marker chalk ruler cookie muffin pastry waffle pancake bagel donut pretzel
    biscuit cracker orchard vineyard pasture thicket grove hedge field farm
    pearl ruby opal jade topaz garnet coral amethyst diamond emerald thumb elbow
    knee ankle wrist shoulder nose mouth chin cheek rhythm lynx crypt nymph gym
    myth glyph hymn tryst sync
    """.split()
)

_VOWELS = "aeiou"
_PLACES = ("hundreds", "tens", "ones")


@dataclass(frozen=True)
class DomainSpec:
    """One task of the demo corpus.

    ``generate`` draws one example from ``rng`` and returns
    ``(input, rationale, target)``; the rationale must reach ``target``.
    """

    name: str
    generate: Callable[[random.Random], tuple[str, str, str]]


def _spell(word: str) -> str:
    """Letters joined by hyphens: byte-level students learn letter tasks far
    faster when the rationale names each letter separately."""
    return "-".join(word)


def _addition(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    ones = a % 10 + b % 10
    carry = ones // 10
    tens = a // 10 + b // 10 + carry
    total = a + b
    if carry:
        steps = f"{a % 10} + {b % 10} = {ones}, write {ones % 10} carry 1; {a // 10} + {b // 10} + 1 = {tens}"
    else:
        steps = f"{a % 10} + {b % 10} = {ones}, write {ones}; {a // 10} + {b // 10} = {tens}"
    return f"What is {a} + {b}?", f"{a} + {b}: {steps}. {total}.", str(total)


def _subtraction(rng: random.Random) -> tuple[str, str, str]:
    a = rng.randint(10, 99)
    b = rng.randint(10, a)
    if a % 10 < b % 10:
        steps = (
            f"{a % 10} < {b % 10}, borrow: {a % 10 + 10} - {b % 10} = {a % 10 + 10 - b % 10}; "
            f"{a // 10} - 1 - {b // 10} = {a // 10 - 1 - b // 10}"
        )
    else:
        steps = f"{a % 10} - {b % 10} = {a % 10 - b % 10}; {a // 10} - {b // 10} = {a // 10 - b // 10}"
    return f"What is {a} - {b}?", f"{a} - {b}: {steps}. {a - b}.", str(a - b)


def _compare_numbers(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.sample(range(100, 1000), 2)
    da, db = str(a), str(b)
    steps = []
    for place, x, y in zip(_PLACES, da, db):
        relation = "=" if x == y else (">" if x > y else "<")
        steps.append(f"{place} {x} {relation} {y}")
        if x != y:
            break
    larger = max(a, b)
    rationale = f"{a} vs {b}: {'; '.join(steps)}. {larger} is larger."
    return f"Which is larger, {a} or {b}?", rationale, str(larger)


def _multiplication(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 9), rng.randint(10, 99)
    ones = a * (b % 10)
    carry = ones // 10
    tens = a * (b // 10) + carry
    if carry:
        steps = f"{a} * {b % 10} = {ones}, write {ones % 10} carry {carry}; {a} * {b // 10} + {carry} = {tens}"
    else:
        steps = f"{a} * {b % 10} = {ones}, write {ones}; {a} * {b // 10} = {tens}"
    return f"What is {a} * {b}?", f"{a} * {b}: {steps}. {a * b}.", str(a * b)


def _parity(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(1, 99_999)
    last = n % 10
    answer = "even" if last % 2 == 0 else "odd"
    return f"Is {n} even or odd?", f"The last digit of {n} is {last}, and {last} is {answer}.", answer


def _reverse_word(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    backwards = word[::-1]
    return f"Reverse the word '{word}'.", f"{_spell(word)} reversed is {_spell(backwards)}.", backwards


def _count_vowels(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    vowels = [c for c in word if c in _VOWELS]
    found = ", ".join(vowels) if vowels else "none"
    rationale = f"Vowels in {_spell(word)}: {found}. That is {len(vowels)}."
    return f"How many vowels are in '{word}'?", rationale, str(len(vowels))


def _sort_letters(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    ordered = "".join(sorted(word))
    rationale = f"{_spell(word)} in alphabetical order is {_spell(ordered)}."
    return f"Sort the letters of '{word}' alphabetically.", rationale, ordered


def _last_letters(rng: random.Random) -> tuple[str, str, str]:
    words = rng.sample(WORDS, rng.randint(2, 3))
    joined = "".join(w[-1] for w in words)
    steps = ", ".join(f"{w} -> {w[-1]}" for w in words)
    return f"Join the last letters of '{' '.join(words)}'.", f"{steps}. Together: {joined}.", joined


def _caesar_shift(rng: random.Random) -> tuple[str, str, str]:
    word, shift = rng.choice(WORDS), rng.randint(1, 3)
    shifted = "".join(chr((ord(c) - ord("a") + shift) % 26 + ord("a")) for c in word)
    steps = ", ".join(f"{c}+{shift}={s}" for c, s in zip(word, shifted))
    return f"Shift each letter of '{word}' forward by {shift}.", f"{steps}.", shifted


# Ordered head first: a domain's size is set by its rank in this tuple.
DOMAINS: tuple[DomainSpec, ...] = (
    DomainSpec("addition", _addition),
    DomainSpec("subtraction", _subtraction),
    DomainSpec("compare_numbers", _compare_numbers),
    DomainSpec("multiplication", _multiplication),
    DomainSpec("parity", _parity),
    DomainSpec("reverse_word", _reverse_word),
    DomainSpec("count_vowels", _count_vowels),
    DomainSpec("sort_letters", _sort_letters),
    DomainSpec("last_letters", _last_letters),
    DomainSpec("caesar_shift", _caesar_shift),
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
    output = OUTPUT_TEMPLATE.format(rationale=rationale, target=target)
    if len(question.encode()) > MAX_INPUT_BYTES or len(output.encode()) > MAX_OUTPUT_BYTES:
        raise ValueError(f"domain {spec.name!r} produced an over-long example: {question!r} -> {output!r}")
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
    zipf_exponent: float = 2.0,
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


def _write_jsonl_atomic(path: str, rows: list[dict[str, Any]]) -> None:
    """Write to a temp file in the same directory and ``os.replace`` it in, so a
    reader never sees a half-written corpus."""
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def write_demo_corpus(out_dir: str, **kwargs: Any) -> dict[str, str]:
    """Generate the corpus (``kwargs`` go to :func:`generate_demo_corpus`) and write
    ``train.jsonl`` and ``test.jsonl`` under ``out_dir``.

    Returns ``{"train": path, "test": path}``.
    """
    train, test = generate_demo_corpus(**kwargs)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"train": os.path.join(out_dir, "train.jsonl"), "test": os.path.join(out_dir, "test.jsonl")}
    _write_jsonl_atomic(paths["train"], train)
    _write_jsonl_atomic(paths["test"], test)
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
