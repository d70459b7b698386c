"""prepare on hostile and real-world input (issues 14/15): labels that are not paths, control characters,
CSV without a header, a domain per file, truncation with its own counts and duplicate reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from distill_jax.data import shards
from distill_jax.data.corpus import CorpusError, FieldMapping
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.data.tokenizers import load_tokenizer

QUIET = dict(progress=False)


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def rejects(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / shards.REJECTS_FILE).read_text().splitlines()]


def test_any_domain_string_is_a_label_long_and_path_like_ones_included(tmp_path):
    # Before: a 213-character domain became a shard file name ("File name too long") and killed the run.
    domains = [
        "d" * 213,
        "d" * 300,
        "d" * 299 + "e",  # Same first 64 characters as the two above: still its own split.
        "ⅹ" * 250,  # Folds to ASCII "x" per character.
        "../../etc/passwd",
        "a/b",
        "/",
        ".",
        "all",
        "名前",
    ]
    rows = [{"id": f"r{i}", "domain": d, "input": f"question {i}", "target": str(i)} for i, d in enumerate(domains)]
    out = tmp_path / "out"
    summary = prepare_corpus([write_jsonl(tmp_path / "c.jsonl", rows)], str(out), PrepareOptions(**QUIET))
    assert summary.written == len(domains) and summary.rejected == {}
    manifest = shards.load_manifest(out)
    assert set(manifest["domains"]) == set(domains)  # The originals, unchanged.
    splits = [info["split"] for info in manifest["domains"].values()]
    assert len(set(splits)) == len(splits)
    assert all(re.fullmatch(r"[a-z0-9_]{1,70}", s) for s in splits), splits
    assert not any(p.name.startswith("..") for p in out.rglob("*")) and (out.parent / "etc").exists() is False
    sources = shards.open_domain_sources(out)  # Readers go through the manifest's mapping.
    tok = load_tokenizer("byt5", "")
    for i, d in enumerate(domains):
        [example] = list(sources[d])
        assert example["domain"] == d and tok.decode(example["inputs"]) == f"question {i}"


def test_control_characters_in_ids_and_domains_are_rejected_with_a_reason(tmp_path):
    rows = [
        {"id": "ok", "domain": "fine", "input": "tabs\tand\nnewlines are content", "target": "1"},
        {"id": "n1", "domain": "bad\x00domain", "input": "a", "target": "1"},
        {"id": "n2", "domain": "esc\x1b[31mred", "input": "b", "target": "1"},
        {"id": "id\x00nul", "domain": "fine", "input": "c", "target": "1"},
        {"id": "n4", "domain": "line\nbreak", "input": "d", "target": "1"},
        {"id": "n5", "domain": "c1\x85", "input": "e", "target": "1"},
    ]
    out = tmp_path / "out"
    summary = prepare_corpus([write_jsonl(tmp_path / "c.jsonl", rows)], str(out), PrepareOptions(**QUIET))
    assert summary.written == 1 and summary.rejected == {"control_character": 5}
    assert [r["line"] for r in rejects(out)] == [2, 3, 4, 5, 6]
    assert all("control character" in r["detail"] for r in rejects(out))
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", summary.format_table())
    with pytest.raises(CorpusError, match="control characters"):
        PrepareOptions(default_domain="x\x00", **QUIET).check()


MMLU_ROWS = [
    ["What is 1+1?", "1", "2", "3", "4", "B"],
    ["Shared question?", "w", "x", "y", "z", "A"],  # In both files: not a cross-file duplicate any more.
]


def _csv(path: Path, rows: list[list[str]]) -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return str(path)


def test_headerless_csv_with_a_domain_per_file(tmp_path):
    # The 57-file subject-per-file layout: no header row, no domain column.
    files = [
        _csv(tmp_path / "abstract_algebra_test.csv", MMLU_ROWS),
        _csv(tmp_path / "anatomy_test.csv", MMLU_ROWS[1:] + [["Bones in an adult?", "206", "205", "300", "12", "A"]]),
    ]
    options = PrepareOptions(
        mapping=FieldMapping(
            id=None, domain="{_file_stem}", input="{question} (A) {A} (B) {B} (C) {C} (D) {D}", target="answer"
        ),
        columns=("question", "A", "B", "C", "D", "answer"),
        **QUIET,
    )
    out = tmp_path / "out"
    summary = prepare_corpus(files, str(out), options)
    assert summary.written == 4 and summary.rejected == {}  # The first row of each file is data.
    assert {d: v["num_examples"] for d, v in summary.domains.items()} == {"abstract_algebra_test": 2, "anatomy_test": 2}
    manifest = shards.load_manifest(out)
    assert manifest["columns"] == ["question", "A", "B", "C", "D", "answer"]
    # Without the column list the first row would be taken as the header and the mapping fails loudly.
    with pytest.raises(CorpusError, match="no column"):
        prepare_corpus(files, str(tmp_path / "out2"), PrepareOptions(mapping=options.mapping, **QUIET))


def test_truncation_keeps_eos_counts_rows_and_names_the_duplicates_it_creates(tmp_path):
    tok = load_tokenizer("byt5", "")
    long_input = "x" * 40
    rows = [
        {"id": "a", "domain": "d", "input": long_input + "-one", "target": "t" * 30},
        {"id": "b", "domain": "d", "input": long_input + "-two", "target": "t" * 30 + "extra"},  # Same once cut.
        {"id": "c", "domain": "d", "input": long_input + "-one", "target": "t" * 30},  # An exact repeat.
        {"id": "e", "domain": "d", "input": "short", "target": "fits"},
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    base = dict(max_input_len=16, max_target_len=12, plain_target_template="{target}", **QUIET)

    none = prepare_corpus([corpus], str(tmp_path / "none"), PrepareOptions(**base))
    assert none.written == 1 and none.rejected == {"input_too_long": 3}

    only_input = prepare_corpus([corpus], str(tmp_path / "input"), PrepareOptions(truncate="input", **base))
    assert only_input.rejected == {"target_too_long": 3} and only_input.truncated == {"input": 0, "target": 0}

    out = tmp_path / "both"
    both = prepare_corpus([corpus], str(out), PrepareOptions(truncate="both", **base))
    assert both.written == 2 and both.truncated == {"input": 1, "target": 1}
    assert both.rejected == {"duplicate_after_truncation": 1, "duplicate_example": 1}
    assert {r["line"]: r["reason"] for r in rejects(out)} == {2: "duplicate_after_truncation", 3: "duplicate_example"}
    assert shards.load_manifest(out)["counts"]["truncated"] == {"input": 1, "target": 1}
    assert "truncated to max_*_len (EOS kept): input 1, target 1" in both.format_table()
    examples = {ex["id"]: ex for ex in shards.open_domain_sources(out)["d"]}
    cut = examples["a"]
    assert len(cut["inputs"]) == 16 and len(cut["targets"]) == 12
    assert cut["inputs"][-1] == tok.eos_id and cut["targets"][-1] == tok.eos_id
    np.testing.assert_array_equal(cut["inputs"][:-1], tok.encode(long_input)[:15])
    assert len(examples["e"]["inputs"]) == len(tok.encode("short"))  # Rows that fit are untouched.
    with pytest.raises(CorpusError, match="truncate='sometimes'"):
        PrepareOptions(truncate="sometimes", **QUIET).check()


def test_new_options_at_their_defaults_keep_existing_content_hashes():
    # Corpora prepared before these options existed stay up to date (re-running prepare is a no-op).
    hashed = PrepareOptions(**QUIET).hashed()
    assert "columns" not in hashed and "truncate" not in hashed
    assert PrepareOptions(truncate="both", **QUIET).hashed()["truncate"] == "both"
