"""The paraphrase corpus: the group split, the files it writes, and asking a (stored-pool) teacher."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_jax.config import default_config
from distill_jax.data.paraphrase_filters import FilterSettings, normalize
from distill_jax.data.paraphrase_sources import Candidate
from distill_jax.paraphrase.corpus import (
    COUNTS_FILE,
    REJECTS_FILE,
    TRAIN_FILE,
    VALIDATION_FILE,
    Gathered,
    build_corpus,
    gather_dataset,
    gather_teacher,
    split_by_source,
)
from distill_jax.teachers.pool import PoolTeacher


def _candidates(sizes):
    return [
        Candidate(f"Source sentence number {s} is here.", f"Paraphrase {p} of sentence {s}.", f"f:{s}:{p}")
        for s, n in enumerate(sizes)
        for p in range(n)
    ]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=0, max_size=40),
    fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
    seed=st.integers(0, 3),
)
def test_split_keeps_every_source_on_one_side_deterministically(sizes, fraction, seed):
    candidates = _candidates(sizes)
    train, validation = split_by_source(candidates, fraction, seed)
    assert sorted(c.origin for c in train + validation) == sorted(c.origin for c in candidates)
    train_sources = {normalize(c.source) for c in train}
    validation_sources = {normalize(c.source) for c in validation}
    assert not train_sources & validation_sources
    if fraction and len(sizes) >= 2:
        assert 1 <= len(validation_sources) <= len(sizes) - 1
        assert abs(len(validation_sources) - len(sizes) * fraction) <= 1
    if not fraction:
        assert not validation
    # The split depends on the seed and the sources, not on the order they come in.
    again_train, again_validation = split_by_source(candidates[::-1], fraction, seed)
    assert {c.origin for c in again_validation} == {c.origin for c in validation}


def test_sources_differing_in_case_or_punctuation_share_a_side():
    candidates = [Candidate(f"Source {i}.", f"P {i} a.", f"a{i}") for i in range(20)]
    candidates += [Candidate(f"source {i}", f"P {i} b.", f"b{i}") for i in range(20)]
    train, validation = split_by_source(candidates, 0.3, 0)
    assert {c.origin[1:] for c in validation if c.origin[0] == "a"} == {
        c.origin[1:] for c in validation if c.origin[0] == "b"
    }
    with pytest.raises(ValueError, match="validation_fraction"):
        split_by_source(candidates, 1.0, 0)


def test_build_writes_prepare_ready_rows_rejects_and_counts_that_add_up(tmp_path):
    candidates = _candidates([3, 2, 2, 1]) + [
        Candidate("Source sentence number 0 is here.", "Paraphrase 0 of sentence 0.", "dup"),
        Candidate("Source sentence number 1 is here.", "Nope.", "short", judged_paraphrase=False),
    ]
    gathered = Gathered(candidates, [dict(filter="read", detail="row has 3 fields", origin="x.csv:9")])
    summary = build_corpus(
        gathered,
        str(tmp_path),
        FilterSettings.from_config(default_config().paraphrase),
        domain="para",
        validation_fraction=0.25,
        seed=1,
    )
    rows = {name: _jsonl(tmp_path / name) for name in (TRAIN_FILE, VALIDATION_FILE, REJECTS_FILE)}
    counts = json.loads((tmp_path / COUNTS_FILE).read_text())
    assert counts == summary.counts
    assert counts["input"] == 11 and counts["kept"] == 8
    assert counts["removed_before_filters"] == {"read": 1}
    assert counts["removed_by_filter"]["exact_duplicate"] == 1
    assert counts["removed_by_filter"]["judged_not_paraphrase"] == 1
    assert len(rows[TRAIN_FILE]) + len(rows[VALIDATION_FILE]) == 8 and len(rows[REJECTS_FILE]) == 3
    assert {r["filter"] for r in rows[REJECTS_FILE]} == {"read", "exact_duplicate", "judged_not_paraphrase"}
    row = rows[TRAIN_FILE][0]
    assert set(row) == {"id", "domain", "input", "target", "meta"} and row["domain"] == "para"
    assert row["meta"]["source_id"].startswith("s") and row["meta"]["origin"].startswith("f:")
    assert counts["validation"]["sources"] == 1 and counts["train"]["sources"] == 3
    text = summary.format_table()
    assert "units in 11 = kept 8 + removed 3" in text and "exact_duplicate" in text


def test_a_pool_teacher_answers_and_everything_it_said_is_accounted_for(tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("The vote passed.\nRain fell all day.\nThe vote  passed.\nNobody stored this one.\n")
    stored = tmp_path / "stored.jsonl"
    stored.write_text(
        json.dumps({"source": "The vote passed.", "paraphrases": ["1. The motion carried.", "---", "It was approved."]})
        + "\n"
        + json.dumps({"source": "Rain fell all day.", "paraphrases": ["It rained all day long."]})
        + "\n"
    )
    teacher = PoolTeacher("", paraphrases=str(stored))
    gathered = gather_teacher(teacher, [str(sentences)], {}, k=5, domain="para", chunk=2)
    assert [(c.source, c.paraphrase, c.origin) for c in gathered.candidates] == [
        ("The vote passed.", "The motion carried.", "sentences.txt:1#1"),
        ("The vote passed.", "It was approved.", "sentences.txt:1#2"),
        ("Rain fell all day.", "It rained all day long.", "sentences.txt:2#1"),
    ]
    assert [(r["filter"], r["origin"]) for r in gathered.rejects] == [
        ("duplicate_source", "sentences.txt:3"),
        ("parse", "sentences.txt:1"),
        ("teacher", "sentences.txt:4"),
    ]
    assert gathered.teacher["requests"] == 3 and gathered.candidates[0].meta["teacher"] == "pool"
    summary = build_corpus(
        gathered,
        str(tmp_path / "out"),
        FilterSettings.from_config(default_config().paraphrase),
        domain="p",
        validation_fraction=0,
        seed=0,
    )
    assert summary.counts["input"] == 6 and summary.counts["kept"] == 3
    assert summary.counts["removed_before_filters"] == {"read": 0, "duplicate_source": 1, "teacher": 1, "parse": 1}
    assert summary.counts["parse_reasons"] == {"not_a_sentence": 1}
    assert "teacher pool: 3 requests" in summary.format_table()


def test_gather_dataset_turns_unusable_rows_into_read_rejects(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"source": "A b c.", "paraphrases": ["C b a."]}\n{"source": ""}\n')
    gathered = gather_dataset("table", [str(path)], {})
    assert len(gathered.candidates) == 1 and gathered.rejects[0]["filter"] == "read"
    assert gathered.rejects[0]["origin"] == "p.jsonl:2"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]
