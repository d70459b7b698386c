"""Readers and per-row validation: every reject reason, every format, and the config errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill_jax.data.corpus import (
    REJECT_REASONS,
    CorpusError,
    FieldMapping,
    ReadStats,
    Reject,
    TeacherRow,
    input_format,
    input_sha256,
    read_rows,
)

ROW = {"id": "a", "domain": "math", "input": "1+1?", "target": "2"}


def write_lines(path: Path, lines: list[bytes | str | dict]) -> str:
    raw = [json.dumps(x).encode() if isinstance(x, dict) else x.encode() if isinstance(x, str) else x for x in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return str(path)


def read_all(path: str, mapping: FieldMapping | None = None, **kw) -> list[TeacherRow | Reject]:
    return list(read_rows(path, mapping or FieldMapping(), **kw))


def only_reject(items: list[TeacherRow | Reject]) -> Reject:
    rejects = [x for x in items if isinstance(x, Reject)]
    assert len(rejects) == 1, items
    return rejects[0]


@pytest.mark.parametrize(
    "line, reason, named",
    [
        (b'{"id": "b", "input": ', "bad_json", "JSON"),
        (b"[1, 2]", "not_an_object", "a list"),
        (b'"just text"', "not_an_object", "str"),
        (json.dumps({k: v for k, v in ROW.items() if k != "target"}), "missing_field", "target"),
        (json.dumps(dict(ROW, id="b", input="   ")), "empty_field", "input"),
        (json.dumps(dict(ROW, id="b", input=True)), "wrong_type", "a boolean"),
        (json.dumps(dict(ROW, id="b", target=None)), "wrong_type", "null"),
        (json.dumps(dict(ROW, id="b", target=[1])), "wrong_type", "a list"),
        (json.dumps(dict(ROW, id="b", rationale={"x": 1})), "wrong_type", "an object"),
        (json.dumps(dict(ROW, id="b", input=3)), "wrong_type", "int"),
        (json.dumps(dict(ROW, id="b", meta="not an object")), "wrong_type", "meta"),
        (json.dumps(dict(ROW, id="b", domain=None)), "wrong_type", "domain"),
        (b'{"id": "b", "domain": "m", "input": "x", "target": NaN}', "wrong_type", "finite"),
        (b'{"id": "b", "domain": "m", "input": "\\ud800", "target": "t"}', "invalid_utf8", "input"),
        (b'{"id": "b", "input": "caf\xe9", "target": "t"}', "invalid_utf8", "0xe9"),
    ],
)
def test_each_row_reason_names_file_line_and_field(tmp_path, line, reason, named):
    path = write_lines(tmp_path / "c.jsonl", [ROW, line, dict(ROW, id="z")])
    items = read_all(path)
    reject = only_reject(items)
    assert (reject.source, reject.line, reject.reason) == (path, 2, reason)
    assert named in reject.detail and reason in REJECT_REASONS
    assert [x.line for x in items if isinstance(x, TeacherRow)] == [1, 3]


def test_numeric_target_and_id_become_strings(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [dict(ROW, id=7, target=51.0), dict(ROW, id="x", target=-3)])
    rows = read_all(path)
    assert [(r.id, r.target) for r in rows] == [("7", "51.0"), ("x", "-3")]


def test_blank_lines_are_counted_not_rejected(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", ["", ROW, "   \t", dict(ROW, id="b"), "\r"])
    stats = ReadStats()
    rows = read_all(path, stats=stats)
    assert [r.line for r in rows] == [2, 4] and all(isinstance(r, TeacherRow) for r in rows)
    assert (stats.rows, stats.blank) == (2, 3)


def test_invalid_utf8_line_among_good_ones(tmp_path):
    bad = json.dumps(dict(ROW, id="bad", input="XX")).encode().replace(b"XX", b"\xff\xfe")
    path = write_lines(
        tmp_path / "c.jsonl",
        [dict(ROW, id=str(i)) for i in range(3)] + [bad] + [dict(ROW, id=str(i)) for i in range(3, 6)],
    )
    items = read_all(path)
    assert [x.reason for x in items if isinstance(x, Reject)] == ["invalid_utf8"]
    assert only_reject(items).line == 4 and "re-encode" in only_reject(items).detail
    assert len([x for x in items if isinstance(x, TeacherRow)]) == 6


def test_mapping_derived_ids_default_domain_rationale_and_meta(tmp_path):
    path = write_lines(
        tmp_path / "teacher.jsonl",
        [
            {"text": "q1", "label": "a1", "cot": "because", "info": {"k": 1}, "src": "alg"},
            {"text": "q2", "label": "a2"},
        ],
    )
    mapping = FieldMapping(input="text", target="label", id=None, domain="src", rationale="cot", meta="info")
    stats = ReadStats()
    rows = read_all(path, mapping, default_domain="misc", stats=stats)
    assert rows[0] == TeacherRow("teacher.jsonl:1", "alg", "q1", "a1", "because", {"k": 1}, path, 1)
    assert (rows[1].id, rows[1].domain, rows[1].rationale, rows[1].meta) == ("teacher.jsonl:2", "misc", None, None)
    assert stats.defaulted_domain == 1
    named = read_all(path, mapping, source_name="pool/teacher.jsonl")
    assert named[0].id == "pool/teacher.jsonl:1"


def test_missing_id_without_derivation_says_how_to_derive(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [{"input": "x", "target": "y"}])
    reject = only_reject(read_all(path))
    assert reject.reason == "missing_field" and "map id to None" in reject.detail


def test_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\n")
    assert isinstance(read_all(str(path))[0], TeacherRow)


def test_csv_with_mapping_quoting_and_line_numbers(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "question,answer,why,subject\n"
        '"multi\nline, with comma",42,,geo\n'
        "\n"
        'q2,7,"she said ""hi""",\n'
        "too,many,fields,here,extra\n",
        encoding="utf-8",
    )
    mapping = FieldMapping(input="question", target="answer", id=None, domain="subject", rationale="why")
    stats = ReadStats()
    items = read_all(str(path), mapping, stats=stats)
    assert items[0] == TeacherRow("t.csv:2", "geo", "multi\nline, with comma", "42", None, None, str(path), 2)
    assert (items[1].line, items[1].domain, items[1].rationale) == (5, "default", 'she said "hi"')
    assert (items[2].reason, items[2].line) == ("bad_row", 6) and "header has 4" in items[2].detail
    assert stats.blank == 1


def test_tsv_is_unquoted_and_invalid_bytes_reject_one_row(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b'input\ttarget\n"quoted\tstays\nbad \xff\tx\nok\ty\n')
    items = read_all(str(path), FieldMapping(id=None))
    assert (items[0].input, items[0].target) == ('"quoted', "stays")
    assert (items[1].reason, items[1].line) == ("invalid_utf8", 3)
    assert items[2].input == "ok"


def test_tabular_missing_required_column_is_a_config_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("question,answer\nq,a\n")
    with pytest.raises(CorpusError, match=r"t\.csv.*'input'.*question"):
        read_all(str(path), FieldMapping(id=None))


def test_parquet_with_mapping_numbers_and_nulls(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "q": ["a", "b", "c"],
                "ans": [1.5, 2.0, None],
                "cot": ["r", None, "r"],
                "dom": ["x", "y", None],
                "extra": [1, 2, 3],
            }
        ),
        path,
    )
    mapping = FieldMapping(input="q", target="ans", id=None, domain="dom", rationale="cot")
    items = read_all(str(path), mapping)
    assert [(r.id, r.target, r.rationale, r.domain) for r in items[:2]] == [
        ("t.parquet:1", "1.5", "r", "x"),
        ("t.parquet:2", "2.0", None, "y"),
    ]
    assert (items[2].reason, items[2].line) == ("wrong_type", 3)


def test_json_array_file_keeps_element_lines(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(
        '[\n  {"ID": "c1", "Question": "q?", "Answer": 51.0},\n\n'
        '  {"ID": "c2", "Question": "r?", "Answer": 3},\n  "stray string"\n]\n'
    )
    items = read_all(str(path), FieldMapping(input="Question", target="Answer", id="ID"))
    assert [(x.id, x.target, x.line) for x in items[:2]] == [("c1", "51.0", 2), ("c2", "3", 4)]
    assert (items[2].reason, items[2].line) == ("not_an_object", 5)


def test_json_extension_holding_json_lines(tmp_path):
    path = write_lines(tmp_path / "lines.json", [ROW, dict(ROW, id="b")])
    assert [r.id for r in read_all(path)] == ["a", "b"]
    rows_of_arrays = write_lines(tmp_path / "arrays.json", ["[1]", "[2]"])
    assert [x.reason for x in read_all(rows_of_arrays)] == ["not_an_object"] * 2


def test_broken_json_array_is_a_config_error_naming_the_line(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[\n{"input": "a", "target": "b"},\n{"input": oops}\n]\n')
    with pytest.raises(CorpusError, match=r"arr\.json:3:.*JSON Lines"):
        read_all(str(path))


def test_unknown_extension_and_unreadable_file_are_config_errors(tmp_path):
    other = tmp_path / "corpus.txt"
    other.write_text("x")
    with pytest.raises(CorpusError, match=r"corpus\.txt.*unknown input format.*\.jsonl"):
        read_all(str(other))
    with pytest.raises(CorpusError, match=r"nope\.jsonl.*cannot open"):
        read_all(str(tmp_path / "nope.jsonl"))
    with pytest.raises(CorpusError, match="unknown input format"):
        input_format("data.xlsx")


def test_input_sha256_is_the_file_content_hash(tmp_path):
    a = write_lines(tmp_path / "a.jsonl", [ROW])
    b = write_lines(tmp_path / "b.jsonl", [ROW])
    c = write_lines(tmp_path / "c.jsonl", [dict(ROW, id="c")])
    assert input_sha256(a) == input_sha256(b) != input_sha256(c)
    assert input_sha256(a) == hashlib.sha256(Path(a).read_bytes()).hexdigest()


def _make_tfds_dataset(data_dir: Path) -> None:
    import tensorflow_datasets as tfds

    class TinyTeacher(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            return None

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {"question": tfds.features.Text(), "answer": tfds.features.Scalar(dtype=np.int64)}
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._gen(3), "test": self._gen(2)}

        def _generate_examples(self, n=0):
            raise AssertionError

        def _gen(self, n):
            for i in range(n):
                yield i, {"question": f"q{i} é", "answer": i * 10}

    TinyTeacher(data_dir=str(data_dir), file_format="array_record").download_and_prepare(
        download_dir=str(data_dir / "dl")
    )


def test_tfds_reader_one_split_and_all_splits(tmp_path, monkeypatch):
    _make_tfds_dataset(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    mapping = FieldMapping(input="question", target="answer", id=None, domain=None)
    rows = read_all("tfds:tiny_teacher:train", mapping)
    assert sorted((r.input, r.target) for r in rows) == [("q0 é", "0"), ("q1 é", "10"), ("q2 é", "20")]
    assert {r.line for r in rows} == {1, 2, 3} and rows[0].id.startswith("tfds:tiny_teacher:train:")
    every = read_all("tfds:tiny_teacher", mapping)
    assert len(every) == 5 and len({r.id for r in every}) == 5
    assert {r.source for r in every} == {"tfds:tiny_teacher:train", "tfds:tiny_teacher:test"}
    assert len(input_sha256("tfds:tiny_teacher")) == 64
    with pytest.raises(CorpusError, match="tfds:absent_set.*TFDS_DATA_DIR"):
        read_all("tfds:absent_set:train", mapping)


def test_input_template_joins_columns_and_names_a_missing_one(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"id": "1", "premise": "A dog runs.", "hypothesis": "An animal moves.", "target": "entailment"})
        + "\n"
        + json.dumps({"id": "2", "premise": "A cat sits.", "target": "neutral"})
        + "\n"
    )
    mapping = FieldMapping(input="Premise: {premise} Hypothesis: {hypothesis}", domain=None)
    rows = read_all(str(path), mapping)
    assert rows[0].input == "Premise: A dog runs. Hypothesis: An animal moves."
    reject = only_reject(rows)
    assert reject.line == 2 and reject.reason == "missing_field" and "'hypothesis'" in reject.detail


def test_bad_templates_are_config_errors():
    for template in ("{premise", "{}", "{a!r}", "{a:>5}"):
        with pytest.raises(CorpusError):
            FieldMapping(input=template)
