"""The filter stage of a paraphrase corpus: (source, paraphrase) candidates -> kept + rejected, counted.

Filters run in `FILTERS` order and the first that objects names the row's reject, so each removed
row is counted once, under one filter, with a detail a person can check. Cheap per-row checks come
first, the duplicate checks next (so a garbled row never shadows a good duplicate), and the
moderation call last, on what is left, because it costs a request per batch:

  judged_not_paraphrase  the data carries a human verdict that the pair is not a paraphrase
  garbled                control characters, mostly non-letters, repeated-token loops, chatter artifacts
  identical_to_source    the same text as the source once case, punctuation and spacing are ignored
  length_ratio           paraphrase/source length (characters) outside [min, max]
  exact_duplicate        the same (source, paraphrase) pair seen before anywhere in the input
  near_duplicate         within a source, word uni+bigram Jaccard >= threshold with a paraphrase kept before
  blocklist              a term of the word list in the source or the paraphrase
  moderation             the moderation endpoint flags the source or the paraphrase

`kept + rejected == candidates` always holds (checked).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from distill_jax.data.corpus import CorpusError
from distill_jax.data.paraphrase_sources import Candidate

FILTERS = (
    "judged_not_paraphrase",
    "garbled",
    "identical_to_source",
    "length_ratio",
    "exact_duplicate",
    "near_duplicate",
    "blocklist",
    "moderation",
)
DEFAULT_BLOCKLIST = "default"
_BLOCKLIST_FILE = "blocklist_en.txt"
_BLOCKLIST_TERM = re.compile(r"^[^\W\d_]+(?:[ '\-][^\W\d_]+)*\*?$")
_NON_WORD = re.compile(r"[\W_]+")
_LOOP_MAX_N = 4  # longest word sequence checked for back-to-back repeats


class Moderator(Protocol):
    """Per text: None if not flagged, else the categories it is flagged for. Raises when it cannot tell."""

    def flag(self, texts: Sequence[str]) -> list[tuple[str, ...] | None]: ...


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    """The filter knobs; their defaults and meaning live in distill_jax.config (`c.paraphrase`)."""

    require_judged_paraphrase: bool
    drop_garbled: bool
    min_letter_fraction: float
    max_repeats: int
    artifact_pattern: str
    drop_identical_to_source: bool
    min_length_ratio: float
    max_length_ratio: float
    drop_exact_duplicates: bool
    near_duplicate_jaccard: float
    blocklist: str

    @classmethod
    def from_config(cls, cfg_paraphrase: Any) -> FilterSettings:
        """From the `c.paraphrase` section of distill_jax.config."""
        return cls(**{f.name: cfg_paraphrase[f.name] for f in dataclasses.fields(cls)})

    def check(self) -> None:
        """CorpusError for settings that cannot work, before any row is read."""
        if not 0 <= self.min_letter_fraction <= 1:
            raise CorpusError(f"paraphrase.min_letter_fraction={self.min_letter_fraction}: must be in [0, 1]")
        if self.max_repeats < 2:
            raise CorpusError(f"paraphrase.max_repeats={self.max_repeats}: must be >= 2 (a word may occur twice)")
        if not 0 <= self.near_duplicate_jaccard <= 1:
            raise CorpusError(f"paraphrase.near_duplicate_jaccard={self.near_duplicate_jaccard}: must be in [0, 1]")
        if self.min_length_ratio < 0 or self.max_length_ratio < 0:
            raise CorpusError("paraphrase.min_length_ratio and max_length_ratio must be >= 0 (0 disables a bound)")
        if self.max_length_ratio and self.min_length_ratio > self.max_length_ratio:
            raise CorpusError(
                f"paraphrase.min_length_ratio={self.min_length_ratio} is above max_length_ratio={self.max_length_ratio}"
            )
        _artifacts(self.artifact_pattern)


@dataclasses.dataclass(frozen=True)
class Rejected:
    candidate: Candidate
    filter: str
    detail: str


@dataclasses.dataclass
class FilterResult:
    kept: list[Candidate]
    rejected: list[Rejected]

    def counts(self) -> dict[str, int]:
        """Rows removed per filter, every filter listed (0 when it removed none), in running order."""
        by_filter = collections.Counter(r.filter for r in self.rejected)
        return {name: by_filter[name] for name in FILTERS}


class Blocklist:
    """Whole-word, case-insensitive terms; a term ending in `*` also matches words that start with it."""

    def __init__(self, terms: Iterable[str], name: str):
        self.name = name
        alternatives = sorted(
            (re.escape(t[:-1]) + r"\w*" if t.endswith("*") else re.escape(t)) for t in {t.lower() for t in terms}
        )
        self._pattern = re.compile(r"\b(?:" + "|".join(alternatives) + r")\b") if alternatives else None

    @classmethod
    def load(cls, spec: str) -> Blocklist | None:
        """The word list `spec` names: "default" (shipped in distill_jax/data), a file path, or "" for none."""
        if not spec:
            return None
        if spec == DEFAULT_BLOCKLIST:
            resource = importlib.resources.files("distill_jax.data").joinpath(_BLOCKLIST_FILE)
            return cls(_terms(resource.read_text(encoding="utf-8"), _BLOCKLIST_FILE), f"default ({_BLOCKLIST_FILE})")
        try:
            with open(spec, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise CorpusError(f"paraphrase.blocklist={spec!r}: cannot read the word list ({err})") from err
        return cls(_terms(text, spec), spec)

    def match(self, text: str) -> str | None:
        """The first blocked word in `text`, or None."""
        if self._pattern is None:
            return None
        found = self._pattern.search(normalize(text))
        return found.group(0) if found else None


def normalize(text: str) -> str:
    """Lower case, punctuation and spacing dropped: what "the same sentence" means to these filters."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split())


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of word unigram+bigram sets: reordering clauses lowers it, unlike plain word sets."""
    fa, fb = _shingles(a), _shingles(b)
    return len(fa & fb) / len(fa | fb) if fa | fb else 1.0


def garbled(text: str, settings: FilterSettings, artifacts: re.Pattern | None) -> str | None:
    """Why `text` is not clean natural-language output, or None."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn") or char == "\ufffd":
            kind = unicodedata.category(char)
            return f"character U+{ord(char):04X} ({kind}) is a control, unassigned or replacement character"
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if visible and letters / len(visible) < settings.min_letter_fraction:
        return (
            f"only {letters}/{len(visible)} visible characters are letters "
            f"(min_letter_fraction={settings.min_letter_fraction})"
        )
    # Words only: punctuation repeats (". . ." in quoted news text) are not loops.
    loop = _repeat_loop(normalize(text).split(), settings.max_repeats)
    if loop:
        return f"{loop!r} repeats {settings.max_repeats}+ times in a row (a decoding loop)"
    found = artifacts.search(text) if artifacts else None
    if found:
        return f"leftover model chatter {found.group(0)!r} (artifact_pattern)"
    return None


def apply_filters(
    candidates: Iterable[Candidate],
    settings: FilterSettings,
    blocklist: Blocklist | None = None,
    moderator: Moderator | None = None,
) -> FilterResult:
    """Runs every filter; see the module docstring for the order and what each removes."""
    settings.check()
    artifacts = _artifacts(settings.artifact_pattern)
    kept: list[Candidate] = []
    rejected: list[Rejected] = []
    seen_pairs: dict[tuple[str, str], str] = {}
    kept_by_source: dict[str, list[Candidate]] = collections.defaultdict(list)
    total = 0
    for candidate in candidates:
        total += 1
        verdict = _row_verdict(candidate, settings, artifacts, blocklist, seen_pairs, kept_by_source)
        if verdict is None:
            kept.append(candidate)
            kept_by_source[candidate.source_id].append(candidate)
        else:
            rejected.append(Rejected(candidate, *verdict))
    if moderator is not None and kept:
        kept, flagged = _moderate(kept, moderator)
        rejected += flagged
    if len(kept) + len(rejected) != total:
        raise AssertionError(
            f"filter accounting is off: {total} candidates, {len(kept)} kept, {len(rejected)} rejected"
        )
    return FilterResult(kept, rejected)


def _row_verdict(
    candidate: Candidate,
    settings: FilterSettings,
    artifacts: re.Pattern | None,
    blocklist: Blocklist | None,
    seen_pairs: dict[tuple[str, str], str],
    kept_by_source: dict[str, list[Candidate]],
) -> tuple[str, str] | None:
    """(filter, detail) of the first filter that removes `candidate`, or None to keep it."""
    source, paraphrase = candidate.source, candidate.paraphrase
    if settings.require_judged_paraphrase and candidate.judged_paraphrase is False:
        return "judged_not_paraphrase", "the data's human judgement says this pair is not a paraphrase"
    if settings.drop_garbled:
        why = garbled(paraphrase, settings, artifacts)
        if why:
            return "garbled", why
    if settings.drop_identical_to_source and normalize(paraphrase) == normalize(source):
        return "identical_to_source", "same text as the source once case, punctuation and spacing are ignored"
    ratio = len(paraphrase) / len(source)
    if (settings.min_length_ratio and ratio < settings.min_length_ratio) or (
        settings.max_length_ratio and ratio > settings.max_length_ratio
    ):
        return (
            "length_ratio",
            f"{len(paraphrase)}/{len(source)} characters = {ratio:.2f}, outside "
            f"[{settings.min_length_ratio}, {settings.max_length_ratio or 'inf'}]",
        )
    pair = (source, paraphrase)
    if settings.drop_exact_duplicates:
        if pair in seen_pairs:
            return "exact_duplicate", f"the same pair as {seen_pairs[pair]}"
        seen_pairs[pair] = candidate.origin
    if settings.near_duplicate_jaccard:
        for other in kept_by_source[candidate.source_id]:
            similarity = jaccard(paraphrase, other.paraphrase)
            if similarity >= settings.near_duplicate_jaccard:
                return (
                    "near_duplicate",
                    f"Jaccard {similarity:.2f} >= {settings.near_duplicate_jaccard} with {other.origin}: "
                    f"{other.paraphrase[:120]!r}",
                )
    if blocklist is not None:
        for role, text in (("source", source), ("paraphrase", paraphrase)):
            word = blocklist.match(text)
            if word:
                return "blocklist", f"the {role} contains {word!r} (word list {blocklist.name})"
    return None


def _moderate(kept: list[Candidate], moderator: Moderator) -> tuple[list[Candidate], list[Rejected]]:
    # Each distinct text is sent once: a source with five paraphrases is asked about once.
    texts = list(dict.fromkeys(t for c in kept for t in (c.source, c.paraphrase)))
    categories = dict(zip(texts, moderator.flag(texts)))
    still: list[Candidate] = []
    flagged: list[Rejected] = []
    for candidate in kept:
        reasons = [
            f"the {role} is flagged ({', '.join(categories[text]) or 'no category given'})"
            for role, text in (("source", candidate.source), ("paraphrase", candidate.paraphrase))
            if categories[text] is not None
        ]
        if reasons:
            flagged.append(Rejected(candidate, "moderation", "; ".join(reasons)))
        else:
            still.append(candidate)
    return still, flagged


def _shingles(text: str) -> set[str]:
    words = normalize(text).split()
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}


def _repeat_loop(words: list[str], repeats: int) -> str | None:
    """The first 1..4-word sequence that occurs `repeats` times back to back, or None."""
    for n in range(1, _LOOP_MAX_N + 1):
        for start in range(len(words) - n * repeats + 1):
            unit = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == unit for k in range(1, repeats)):
                return " ".join(unit)
    return None


def _artifacts(pattern: str) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as err:
        raise CorpusError(f"paraphrase.artifact_pattern {pattern!r} is not a valid regular expression ({err})") from err


def _terms(text: str, where: str) -> list[str]:
    terms = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        term = line.split("#", 1)[0].strip()
        if not term:
            continue
        if not _BLOCKLIST_TERM.match(term):
            raise CorpusError(
                f"{where}:{line_no}: {term!r} is not a word list term; write one word or phrase per line "
                "(letters, spaces, ' and -), optionally ending in * for a prefix, # for comments"
            )
        terms.append(normalize(term) + ("*" if term.endswith("*") else ""))
    return terms
