"""prepare on the real teacher corpora in ../shared (skipped when ../shared is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill_jax.data import shards
from distill_jax.data.corpus import FieldMapping
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.data.tokenizers import load_tokenizer

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MATH = DATA / "baldistill_math"
PALM = DATA / "distill_step_by_step_palm_rationales"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} absent (../shared not checked out)")


def first_json_line(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.loads(f.readline())


def check_accounting(out: Path, summary) -> dict:
    manifest = shards.load_manifest(str(out))
    counts = manifest["counts"]
    assert counts["read"] == counts["written"] + sum(counts["rejected"].values())
    assert counts["read"] == sum(i["rows"] for i in manifest["inputs"])
    assert counts["written"] == sum(d["num_examples"] for d in manifest["domains"].values())
    sources = shards.open_domain_sources(str(out))
    assert {d: len(s) for d, s in sources.items()} == {d: v["num_examples"] for d, v in manifest["domains"].items()}
    rejects = (out / shards.REJECTS_FILE).read_text(encoding="utf-8").splitlines()
    assert len(rejects) == summary.rejected_total
    return manifest


def test_baldistill_math_pool_domains_plus_teacher_rationales(tmp_path):
    pool, cot = MATH / "corpus.jsonl", MATH / "math_chatgpt_cot_train_count_300.jsonl"
    options = PrepareOptions(
        mapping=FieldMapping(input="text", target="label", id=None, domain="source", rationale="rationale"),
        default_domain="math_teacher_cot",
        max_input_len=1024,
        max_target_len=2048,
        progress=False,
    )
    out = tmp_path / "math"
    summary = prepare_corpus([str(pool), str(cot)], str(out), options)
    manifest = check_accounting(out, summary)
    assert summary.read == 4125 + 2100 and summary.blank == 0
    assert set(manifest["domains"]) == {
        "Algebra",
        "Counting & Probability",
        "Geometry",
        "Intermediate Algebra",
        "Number Theory",
        "Prealgebra",
        "Precalculus",
        "math_teacher_cot",
    }
    assert set(summary.rejected) <= {"input_too_long", "target_too_long", "duplicate_example"}
    assert summary.written > 0.95 * summary.read
    # The first teacher row's target is the rationale template applied to the teacher's text.
    first = first_json_line(cot)
    tok = load_tokenizer()
    source = shards.open_domain_sources(str(out))["math_teacher_cot"]
    by_id = {ex["id"]: ex for ex in source}
    example = by_id["math_chatgpt_cot_train_count_300.jsonl:1"]
    assert tok.decode(example["targets"]) == f"{first['rationale']} So the answer is {first['label']}."
    assert tok.decode(example["inputs"]) == first["text"]
    assert prepare_corpus([str(pool), str(cot)], str(out), options).was_noop


def test_svamp_json_array_with_numeric_answers(tmp_path):
    options = PrepareOptions(
        mapping=FieldMapping(input="Question", target="Answer", id="ID", domain="Type"), progress=False
    )
    out = tmp_path / "svamp"
    summary = prepare_corpus([str(PALM / "svamp" / "SVAMP.json")], str(out), options)
    manifest = check_accounting(out, summary)
    # Only "Question" is mapped (the "Body" holding the numbers is not), so different problems with
    # the same question and answer collapse: the duplicate check drops exactly those.
    assert summary.read == 1000 and summary.written > 900
    assert set(summary.rejected) == {"duplicate_example"}
    assert {"Subtraction", "Addition"} <= set(manifest["domains"])
    example = shards.open_domain_sources(str(out))["Subtraction"][0]
    assert load_tokenizer().decode(example["targets"]).endswith(".0")  # floats are kept verbatim


def test_svamp_input_template_joins_body_and_question(tmp_path):
    options = PrepareOptions(
        mapping=FieldMapping(input="{Body} {Question}", target="Answer", id="ID", domain="Type"), progress=False
    )
    out = tmp_path / "svamp"
    summary = prepare_corpus([str(PALM / "svamp" / "SVAMP.json")], str(out), options)
    check_accounting(out, summary)
    # With the body joined in, every problem is distinct: nothing is dropped as a duplicate.
    assert summary.read == 1000 and summary.written == 1000 and not summary.rejected
    rows = json.loads((PALM / "svamp" / "SVAMP.json").read_text())
    by_id = {r["ID"]: r for r in rows}
    example = shards.open_domain_sources(str(out))["Subtraction"][0]
    source = by_id[example["id"]]
    assert load_tokenizer().decode(example["inputs"]) == f"{source['Body']} {source['Question']}"


def test_cqa_and_anli_json_lines_in_json_files(tmp_path):
    cqa = prepare_corpus(
        [str(PALM / "cqa" / "cqa_test.json")],
        str(tmp_path / "cqa"),
        PrepareOptions(
            mapping=FieldMapping(input="question", target="answer", id="id", domain=None),
            default_domain="cqa",
            progress=False,
        ),
    )
    check_accounting(tmp_path / "cqa", cqa)
    assert (cqa.read, cqa.written, list(cqa.domains)) == (1221, 1221, ["cqa"])
    # ANLI: integer labels become "0"/"1"/"2"; the human "reason" is the rationale.
    anli = prepare_corpus(
        [str(PALM / "anli1" / "anli1_valid.json")],
        str(tmp_path / "anli"),
        PrepareOptions(
            mapping=FieldMapping(input="premise", target="label", id="uid", domain=None, rationale="reason"),
            default_domain="anli1",
            max_input_len=2048,
            max_target_len=2048,
            progress=False,
        ),
    )
    check_accounting(tmp_path / "anli", anli)
    assert anli.read == 1000 and anli.written > 900


def test_index_aligned_rationale_lists_are_rejected_with_advice(tmp_path):
    """llm/*.json hold bare lists of strings aligned with a base file: not rows on their own."""
    out = tmp_path / "llm"
    summary = prepare_corpus(
        [str(PALM / "svamp" / "llm" / "test_CoT_0.json")],
        str(out),
        PrepareOptions(mapping=FieldMapping(id=None), progress=False),
    )
    assert (summary.read, summary.written, summary.rejected) == (200, 0, {"not_an_object": 200})
    first = json.loads((out / shards.REJECTS_FILE).read_text(encoding="utf-8").splitlines()[0])
    assert first["line"] == 1 and "join" in first["detail"]
