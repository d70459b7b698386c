"""Tests for the generated demo corpus: determinism, long-tailed shape, split
hygiene, and teacher rationales that are actually correct."""

from __future__ import annotations

import json
import os
import random
import re
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_jax.data.demo_corpus import (
    DOMAINS,
    MAX_INPUT_BYTES,
    MAX_RATIONALE_BYTES,
    MAX_TARGET_BYTES,
    MIN_DOMAIN_SIZE,
    domain_sizes,
    generate_demo_corpus,
    synthesize_examples,
    write_demo_corpus,
)

REQUIRED_FIELDS = {"id", "domain", "input", "target", "rationale", "meta"}
DOMAIN_NAMES = [spec.name for spec in DOMAINS]


@pytest.fixture(scope="module")
def corpus() -> tuple[list[dict], list[dict]]:
    return generate_demo_corpus()


def _symbols(question: str) -> str:
    """The digits or letters the question is about (after the last ':' or inside quotes, or listed)."""
    quoted = re.search(r"'([a-z]+)'", question)
    if quoted:
        return quoted.group(1)
    listed = re.search(r"of ([a-z0-9]), ([a-z0-9]), ([a-z0-9])\?", question)
    if listed:
        return "".join(listed.groups())
    return re.findall(r"([a-z0-9]+)\?$", question)[0]


def _expected_target(domain: str, question: str) -> str:
    """Recompute the answer from the question alone, independently of the generators."""
    s = _symbols(question)
    if domain in ("min_digit", "earliest_letter"):
        return min(s)
    if domain in ("max_digit", "latest_letter"):
        return max(s)
    if domain == "max_odd_digit":
        return max(c for c in s if int(c) % 2 == 1)
    if domain == "min_even_digit":
        return min(c for c in s if int(c) % 2 == 0)
    if domain in ("median_digit", "median_letter"):
        return sorted(s)[1]
    if domain == "missing_digit":
        return (set(string.digits) - set(s)).pop()
    if domain == "missing_letter":
        return (set("abcdefghij") - set(s)).pop()
    raise AssertionError(f"no reference answer for {domain}")


def _check_rationale(domain: str, rationale: str, target: str) -> None:
    """The rationale lists the right symbols and its last word is the target."""
    assert rationale.rstrip(".").split()[-1] == target, rationale
    assert len(rationale.encode()) <= MAX_RATIONALE_BYTES


def test_domains_are_well_formed() -> None:
    assert len(DOMAINS) == 10
    assert len(set(DOMAIN_NAMES)) == len(DOMAIN_NAMES)


def test_default_sizes_are_long_tailed() -> None:
    sizes = domain_sizes(3000, 10, 2.5)  # The demo's pool.
    assert sizes == [2264, 400, 145, 71, 40, 26, 17, 13, 12, 12]
    assert sum(sizes[:2]) / 3000 > 0.85  # the head holds most of the data
    assert sum(1 for s in sizes if s < 30) >= 4  # a tail of a dozen or two each


def test_sizes_follow_the_power_law_within_rounding() -> None:
    for exponent in (0.0, 1.0, 1.2, 2.0):
        sizes = domain_sizes(6000, 10, exponent)
        weights = [k**-exponent for k in range(1, 11)]
        for size, weight in zip(sizes, weights):
            assert abs(size - 6000 * weight / sum(weights)) < 1


def test_small_budgets_clamp_the_tail_to_the_minimum() -> None:
    sizes = domain_sizes(300, 10, 2.0)
    assert sum(sizes) == 300
    assert sizes[-1] == MIN_DOMAIN_SIZE and sizes.count(MIN_DOMAIN_SIZE) >= 3
    free = [s for s in sizes if s > MIN_DOMAIN_SIZE]
    assert free[0] / free[1] == pytest.approx(4, abs=0.05)  # unclamped ranks keep 1/k**2
    assert domain_sizes(10 * MIN_DOMAIN_SIZE, 10, 3.0) == [MIN_DOMAIN_SIZE] * 10


@given(
    num_domains=st.integers(1, 20),
    extra=st.integers(0, 50_000),
    exponent=st.floats(0.0, 4.0),
)
def test_domain_sizes_invariants(num_domains: int, extra: int, exponent: float) -> None:
    num_train = num_domains * MIN_DOMAIN_SIZE + extra
    sizes = domain_sizes(num_train, num_domains, exponent)
    assert len(sizes) == num_domains
    assert sum(sizes) == num_train
    assert min(sizes) >= MIN_DOMAIN_SIZE
    assert sizes == sorted(sizes, reverse=True)


def test_domain_sizes_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError):
        domain_sizes(10 * MIN_DOMAIN_SIZE - 1, 10, 1.0)
    with pytest.raises(ValueError):
        domain_sizes(6000, 0, 1.0)
    with pytest.raises(ValueError):
        domain_sizes(6000, 10, -1.0)


def test_corpus_matches_the_requested_sizes(corpus) -> None:
    train, test = corpus
    sizes = domain_sizes(6000, len(DOMAINS), 2.5)
    counts = {name: 0 for name in DOMAIN_NAMES}
    for row in train:
        counts[row["domain"]] += 1
    assert [counts[name] for name in DOMAIN_NAMES] == sizes
    assert len(test) == 50 * len(DOMAINS)
    assert all(sum(r["domain"] == name for r in test) == 50 for name in DOMAIN_NAMES)


def test_test_split_never_overlaps_train_and_inputs_are_unique(corpus) -> None:
    train, test = corpus
    train_inputs = [r["input"] for r in train]
    test_inputs = [r["input"] for r in test]
    assert len(set(train_inputs)) == len(train_inputs)
    assert len(set(test_inputs)) == len(test_inputs)
    assert not set(train_inputs) & set(test_inputs)


def test_test_split_does_not_depend_on_train_settings(corpus) -> None:
    _, test = corpus
    _, other_test = generate_demo_corpus(num_train=1500, zipf_exponent=1.0)
    assert other_test == test


def test_ids_are_unique_and_stable(corpus) -> None:
    train, test = corpus
    ids = [r["id"] for r in train + test]
    assert len(set(ids)) == len(ids)
    again_train, again_test = generate_demo_corpus()
    assert [r["id"] for r in again_train + again_test] == ids
    assert test[0]["id"] == "min_digit-test-00000"


def test_rows_have_the_canonical_schema(corpus) -> None:
    train, test = corpus
    for split, rows in (("train", train), ("test", test)):
        for row in rows:
            assert set(row) == REQUIRED_FIELDS
            assert all(isinstance(row[k], str) and row[k] for k in REQUIRED_FIELDS - {"meta"})
            assert row["domain"] in DOMAIN_NAMES
            assert row["meta"]["split"] == split
            assert row["meta"]["domain_rank"] == DOMAIN_NAMES.index(row["domain"]) + 1


def test_every_row_is_correct_and_fits_the_byte_budget(corpus) -> None:
    train, test = corpus
    for row in train + test:
        assert row["target"] == _expected_target(row["domain"], row["input"]), row
        _check_rationale(row["domain"], row["rationale"], row["target"])
        assert len(row["input"].encode()) <= MAX_INPUT_BYTES
        assert len(row["target"].encode()) <= MAX_TARGET_BYTES


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_generators_are_correct_for_any_draw(seed: int) -> None:
    rng = random.Random(seed)
    for spec in DOMAINS:
        for _ in range(20):
            question, rationale, target = spec.generate(rng)
            assert target == _expected_target(spec.name, question)
            _check_rationale(spec.name, rationale, target)
            assert len(question.encode()) <= MAX_INPUT_BYTES
            assert len(target.encode()) <= MAX_TARGET_BYTES


def test_running_out_of_distinct_inputs_is_an_error() -> None:
    # median_digit has 720 distinct questions (ordered triples of distinct digits).
    with pytest.raises(ValueError, match="distinct inputs"):
        synthesize_examples(0, "median_digit", 721, set())


def test_synthesized_examples_are_new_correct_and_extend_stably(corpus) -> None:
    train, test = corpus
    known = {r["input"] for r in train + test}
    made = synthesize_examples(0, "missing_letter", 40, known)
    assert len(made) == 40 and not {q for q, _, _ in made} & known
    for question, rationale, target in made:
        assert target == _expected_target("missing_letter", question)
        _check_rationale("missing_letter", rationale, target)
    assert synthesize_examples(0, "missing_letter", 60, known)[:40] == made


def test_write_is_deterministic_valid_jsonl_and_leaves_no_temp_files(tmp_path) -> None:
    first = write_demo_corpus(str(tmp_path / "a"), seed=3, num_train=600, num_test_per_domain=5)
    second = write_demo_corpus(str(tmp_path / "b"), seed=3, num_train=600, num_test_per_domain=5)
    other = write_demo_corpus(str(tmp_path / "c"), seed=4, num_train=600, num_test_per_domain=5)
    assert set(first) == {"train", "test"}
    for split in ("train", "test"):
        data = [Path(paths[split]).read_bytes() for paths in (first, second, other)]
        assert data[0] == data[1]
        assert data[0] != data[2]
    train, test = generate_demo_corpus(seed=3, num_train=600, num_test_per_domain=5)
    with open(first["train"], encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == train
    with open(first["test"], encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == test
    assert sorted(os.listdir(tmp_path / "a")) == ["test.jsonl", "train.jsonl"]


def test_write_replaces_an_existing_corpus(tmp_path) -> None:
    out_dir = str(tmp_path)
    write_demo_corpus(out_dir, num_train=600, num_test_per_domain=5)
    paths = write_demo_corpus(out_dir, num_train=300, num_test_per_domain=2)
    with open(paths["train"], encoding="utf-8") as f:
        assert sum(1 for _ in f) == 300
    assert sorted(os.listdir(out_dir)) == ["test.jsonl", "train.jsonl"]
