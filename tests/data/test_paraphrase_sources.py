"""Loaders of paraphrase data: small hand-made files in each format, and the real APTY/MRPC/PAWS files."""

import collections
import json

import pytest

from distill_jax.data.corpus import CorpusError
from distill_jax.data.paraphrase_sources import Candidate, ReadProblem, load, read_sentences, source_id


def _split(rows):
    rows = list(rows)
    return [r for r in rows if isinstance(r, Candidate)], [r for r in rows if isinstance(r, ReadProblem)]


def test_apty_shape(tmp_path):
    path = tmp_path / "apty.csv"
    path.write_text(
        "annotator;apt;original;paraphrase_fixed;paraphrase;golden_example\n"
        '1;Punctuation changes;He left.;"He left; quickly.";True;False\n'
        "2;Semantic based;He left.;He went away.;False;True\n"
        "3;Semantic based;He left.;He departed.;maybe;False\n"
        "4;Semantic based;He left.;;True;False\n"
    )
    candidates, problems = _split(load("apty", str(path)))
    assert [(c.paraphrase, c.judged_paraphrase, c.origin) for c in candidates] == [
        ("He left; quickly.", True, "apty.csv:2"),
        ("He went away.", False, "apty.csv:3"),
    ]
    assert candidates[1].meta == {
        "annotator": "2",
        "apt": "Semantic based",
        "paraphrase": False,
        "golden_example": True,
    }
    assert [(p.origin, p.detail[:26]) for p in problems] == [
        ("apty.csv:4", "column 'paraphrase' is 'ma"),
        ("apty.csv:5", "the paraphrase is empty; f"),
    ]
    path.write_text("a;b\n1;2\n")
    with pytest.raises(
        CorpusError, match=r"apty.csv:1: no column\(s\) \['original', 'paraphrase_fixed', 'paraphrase'\]"
    ):
        list(load("apty", str(path)))


def test_mrpc_and_paws_shapes(tmp_path):
    mrpc = tmp_path / "msr.txt"
    mrpc.write_text(
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said "no".\tHe refused.\n0\t3\t4\tA b.\tC d.\n1\t5\n'
    )
    candidates, problems = _split(load("mrpc", str(mrpc)))
    assert [(c.source, c.judged_paraphrase, c.meta["mrpc_id1"]) for c in candidates] == [
        ('He said "no".', True, "1"),
        ("A b.", False, "3"),
    ]
    assert problems[0].origin == "msr.txt:4" and "row has 2 fields" in problems[0].detail

    for header in ("", "id\tsentence1\tsentence2\tlabel\n"):
        paws = tmp_path / "dev.tsv"
        paws.write_text(header + "1\tIt is red .\tRed it is .\t1\n2\tX y .\tY x .\t0\n")
        candidates, problems = _split(load("paws", str(paws)))
        assert [(c.paraphrase, c.judged_paraphrase) for c in candidates] == [("Red it is .", True), ("Y x .", False)]
        assert not problems and candidates[0].origin == f"dev.tsv:{1 + bool(header)}"


def test_generic_tables_with_lists_single_values_and_labels(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"src": "One.", "para": ["Uno.", "Eins."], "ok": 1},
        {"src": "Two.", "para": "Deux.", "ok": "false"},
        {"src": "Three.", "para": [3], "ok": 1},
        {"src": "Four.", "para": "Vier.", "ok": "perhaps"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\nnot json\n")
    fields = {"source": "src", "paraphrases": "para", "label": "ok"}
    candidates, problems = _split(load("table", str(path), fields))
    assert [(c.origin, c.paraphrase, c.judged_paraphrase) for c in candidates] == [
        ("pairs.jsonl:1#1", "Uno.", True),
        ("pairs.jsonl:1#2", "Eins.", True),
        ("pairs.jsonl:2", "Deux.", False),
    ]
    assert [p.origin for p in problems] == ["pairs.jsonl:3", "pairs.jsonl:4", "pairs.jsonl:6"]
    assert problems[2].detail.startswith("bad_json")

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('source,paraphrases\nOne.,"[""Uno."", ""Eins.""]"\nTwo.,Deux.\n')
    candidates, _ = _split(load("table", str(csv_path), {}))
    assert [c.paraphrase for c in candidates] == ["Uno.", "Eins.", "Deux."]
    with pytest.raises(CorpusError, match="no column"):
        list(load("table", str(csv_path), {"source": "sentence"}))
    with pytest.raises(CorpusError, match="no such file"):
        list(load("mrpc", str(tmp_path / "missing.txt")))


def test_sentences_for_a_teacher_and_source_ids(tmp_path):
    txt = tmp_path / "s.txt"
    txt.write_text("First  one.\n\nSecond one.\n")
    assert list(read_sentences(str(txt), {})) == [("s.txt:1", "First one."), ("s.txt:3", "Second one.")]
    table = tmp_path / "s.jsonl"
    table.write_text('{"text": "A."}\n{"text": ""}\n')
    rows = list(read_sentences(str(table), {"source": "text"}))
    assert rows[0] == ("s.jsonl:1", "A.") and isinstance(rows[1], ReadProblem) and "'text'" in rows[1].detail
    assert source_id("A  b.") == source_id("A b.") != source_id("a b.")


@pytest.mark.parametrize(
    "fmt, path, rows, judged_true",
    [
        ("apty", "apty_chatgpt_paraphrase_types/apty_base.csv", 575, 518),
        ("mrpc", "mrpc_msrp/msr_paraphrase_train.txt", 4076, 2753),
        ("mrpc", "mrpc_msrp/msr_paraphrase_test.txt", 1725, 1147),
        ("paws", "paws_wiki/dev.tsv", 8000, 3539),
    ],
)
def test_real_files_match_their_provenance(shared_data, fmt, path, rows, judged_true):
    candidates, problems = _split(load(fmt, str(shared_data / path)))
    assert not problems and len(candidates) == rows
    assert collections.Counter(c.judged_paraphrase for c in candidates)[True] == judged_true
