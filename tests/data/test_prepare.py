"""prepare_corpus end to end: shards round-trip, manifest, rejects, atomicity, re-runs, fuzzing."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import grain
import pytest
import tensorflow_datasets as tfds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_jax.data import shards
from distill_jax.data.corpus import REJECT_REASONS, CorpusError, FieldMapping
from distill_jax.data.corpus_writer import source_labels
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.data.tokenizers import load_tokenizer

QUIET = dict(progress=False)
ROWS = [
    {"id": "m1", "domain": "Number Theory", "input": "What is 2+2?", "target": 4, "rationale": "2+2 is 4."},
    {"id": "m2", "domain": "Number Theory", "input": "What is 3*3?", "target": "9"},
    {
        "id": "g1",
        "domain": "geometry",
        "input": "Sides of a triangle?",
        "target": "3",
        "rationale": "A triangle has three sides.",
        "meta": {"teacher": "palm"},
    },
    {"id": "e1", "domain": "émoji ✓", "input": "Say hi 👋", "target": "hi 👋"},
]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8"
    )
    return str(path)


def read_rejects(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / shards.REJECTS_FILE).read_text().splitlines()]


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name))


@pytest.fixture
def corpus(tmp_path) -> str:
    return write_jsonl(tmp_path / "teacher.jsonl", ROWS)


def test_shards_round_trip_with_rationale_template(tmp_path, corpus):
    out = tmp_path / "out"
    summary = prepare_corpus([corpus], str(out), PrepareOptions(**QUIET))
    assert (summary.read, summary.written, summary.rejected, summary.was_noop) == (4, 4, {}, False)
    tok = load_tokenizer()
    sources = shards.open_domain_sources(str(out))
    assert sorted(sources) == ["Number Theory", "geometry", "émoji ✓"]
    got = {}
    for domain, source in sources.items():
        for ex in source:
            assert ex["domain"] == domain and ex["inputs"][-1] == ex["targets"][-1] == tok.eos_id
            got[ex["id"]] = (tok.decode(ex["inputs"]), tok.decode(ex["targets"]))
    assert got == {
        "m1": ("What is 2+2?", "2+2 is 4. So the answer is 4."),
        "m2": ("What is 3*3?", "9"),
        "g1": ("Sides of a triangle?", "A triangle has three sides. So the answer is 3."),
        "e1": ("Say hi 👋", "hi 👋"),
    }
    manifest = shards.load_manifest(str(out))
    for domain, source in sources.items():
        info = manifest["domains"][domain]
        n_in = sum(len(ex["inputs"]) for ex in source)
        n_out = sum(len(ex["targets"]) for ex in source)
        assert (info["num_examples"], info["num_input_tokens"], info["num_target_tokens"]) == (len(source), n_in, n_out)
        assert info["num_tokens"] == n_in + n_out
    assert manifest["domains"]["Number Theory"]["split"] == "number_theory"
    assert manifest["counts"] == {"read": 4, "written": 4, "blank": 0, "rejected": {}}
    assert manifest["inputs"][0]["rows"] == 4 and len(manifest["inputs"][0]["sha256"]) == 64
    assert manifest["tokenizer"] == tok.to_dict()
    assert sorted(os.listdir(out)) == ["distill_corpus", "manifest.json", "rejects.jsonl"]
    assert siblings(out) == ["out"]


def test_tfds_readers_without_tensorflow(tmp_path, corpus):
    out = tmp_path / "out"
    prepare_corpus([corpus], str(out), PrepareOptions(**QUIET))
    by_name = tfds.data_source("distill_corpus", data_dir=str(out), split="geometry", download=False)
    by_dir = tfds.builder_from_directory(str(out / "distill_corpus" / "1.0.0")).as_data_source()
    assert len(by_name) == 1 and by_name[0]["id"] == b"g1"
    assert sorted(by_dir) == ["emoji", "geometry", "number_theory"]
    assert by_dir["number_theory"][0]["inputs"].dtype.name == "int32"
    source = shards.open_domain_sources(str(out))["Number Theory"]
    assert len(grain.MapDataset.source(source).to_iter_dataset().__iter__().__next__()["inputs"]) > 1
    assert pickle.loads(pickle.dumps(source))[0]["domain"] == "Number Theory"
    assert [x["id"] for x in source.__getitems__([0, 1])] == [source[0]["id"], source[1]["id"]]


def test_too_long_rows_are_rejected_never_truncated(tmp_path):
    rows = [
        {"id": "ok", "input": "abc", "target": "xyz"},  # 4 tokens each with EOS: at the limit
        {"id": "long_in", "input": "abcd", "target": "x"},
        {"id": "long_out", "input": "a", "target": "wxyz"},
    ]
    out = tmp_path / "out"
    options = PrepareOptions(mapping=FieldMapping(domain=None), max_input_len=4, max_target_len=4, **QUIET)
    summary = prepare_corpus([write_jsonl(tmp_path / "c.jsonl", rows)], str(out), options)
    assert summary.rejected == {"input_too_long": 1, "target_too_long": 1}
    rejects = read_rejects(out)
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "input_too_long"), (3, "target_too_long")]
    assert "5 tokens" in rejects[0]["detail"] and "max_input_len=4" in rejects[0]["detail"]
    assert set(rejects[0]) == {"source", "line", "reason", "detail", "excerpt"}


def test_duplicate_ids_first_occurrence_wins_across_files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [ROWS[0], dict(ROWS[1], id="m1")])
    b = write_jsonl(tmp_path / "b.jsonl", [dict(ROWS[2], id="m1"), ROWS[3]])
    out = tmp_path / "out"
    summary = prepare_corpus([a, b], str(out), PrepareOptions(**QUIET))
    assert (summary.written, summary.rejected) == (2, {"duplicate_id": 2})
    rejects = read_rejects(out)
    assert [(Path(r["source"]).name, r["line"]) for r in rejects] == [("a.jsonl", 2), ("b.jsonl", 1)]
    assert all(f"{a}:1" in r["detail"] for r in rejects)


def test_duplicate_examples_within_a_domain_are_optional(tmp_path):
    row = {"input": "same", "target": "same", "domain": "d"}
    path = write_jsonl(tmp_path / "c.jsonl", [row, row, dict(row, domain="other"), dict(row, rationale="r")])
    options = PrepareOptions(mapping=FieldMapping(id=None), **QUIET)
    summary = prepare_corpus([path], str(tmp_path / "out"), options)
    assert (summary.written, summary.rejected) == (3, {"duplicate_example": 1})
    assert "c.jsonl:1" in read_rejects(tmp_path / "out")[0]["detail"]
    keep = PrepareOptions(mapping=FieldMapping(id=None), drop_duplicate_examples=False, **QUIET)
    assert prepare_corpus([path], str(tmp_path / "keep"), keep).written == 4


def test_rejects_and_counts_add_up_with_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [ROWS[0], "", "{broken", "[1]", "  ", ROWS[1]])
    out = tmp_path / "out"
    summary = prepare_corpus([path], str(out), PrepareOptions(**QUIET))
    assert (summary.read, summary.written, summary.blank) == (4, 2, 2)
    assert summary.rejected == {"bad_json": 1, "not_an_object": 1}
    assert [r["line"] for r in read_rejects(out)] == [3, 4]
    table = summary.format_table()
    assert "rows read 4 = written 2 + rejected 2" in table and "number_theory" in table


def test_rerun_is_a_noop_and_changes_need_overwrite(tmp_path, corpus):
    out = tmp_path / "out"
    first = prepare_corpus([corpus], str(out), PrepareOptions(**QUIET))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = prepare_corpus([corpus], str(out), PrepareOptions(**QUIET))
    assert again.was_noop and again.written == first.written and "up to date" in again.format_table()
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    write_jsonl(Path(corpus), ROWS[:2])
    with pytest.raises(CorpusError, match="already exists.*overwrite"):
        prepare_corpus([corpus], str(out), PrepareOptions(**QUIET))
    with pytest.raises(CorpusError, match="already exists"):
        prepare_corpus([corpus], str(out), PrepareOptions(max_input_len=100, **QUIET))
    replaced = prepare_corpus([corpus], str(out), PrepareOptions(**QUIET), overwrite=True)
    assert (replaced.written, replaced.was_noop) == (2, False)
    assert shards.load_manifest(str(out))["counts"]["written"] == 2
    assert siblings(out) == ["out"]


def test_existing_dir_that_is_not_a_corpus_is_not_replaced_silently(tmp_path, corpus):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(CorpusError, match="other files"):
        prepare_corpus([corpus], str(out), PrepareOptions(**QUIET))
    assert (out / "precious.txt").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_crash_midway_leaves_output_untouched(tmp_path, corpus, monkeypatch, existing):
    out = tmp_path / "out"
    if existing:
        prepare_corpus([write_jsonl(tmp_path / "old.jsonl", ROWS[:1])], str(out), PrepareOptions(**QUIET))
    before = (out / "manifest.json").read_text() if existing else None

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(shards, "write_shards", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_corpus([corpus], str(out), PrepareOptions(**QUIET), overwrite=True)
    assert siblings(out) == (["out"] if existing else [])
    if existing:
        assert (out / "manifest.json").read_text() == before
        assert len(shards.open_domain_sources(str(out))["Number Theory"]) == 1


@pytest.mark.parametrize(
    "template, message",
    [
        ("{rationale} {answer}", "answer"),
        ("{rationale} {target", "not a valid format string"),
        ("{rationale}", "include {target}"),
        ("{target.upper}", "target.upper"),
        ("{target!z}", "cannot be formatted"),
    ],
)
def test_bad_template_fails_before_reading(tmp_path, template, message):
    with pytest.raises(CorpusError, match=message.replace("{", r"\{")):
        prepare_corpus(
            [str(tmp_path / "missing.jsonl")], str(tmp_path / "out"), PrepareOptions(target_template=template, **QUIET)
        )
    with pytest.raises(CorpusError, match="rationale"):
        PrepareOptions(plain_target_template="{rationale}: {target}").check()


def test_config_errors_name_the_problem(tmp_path, corpus):
    with pytest.raises(CorpusError, match="more than once"):
        prepare_corpus([corpus, corpus], str(tmp_path / "out"), PrepareOptions(**QUIET))
    with pytest.raises(CorpusError, match="no inputs"):
        prepare_corpus([], str(tmp_path / "out"), PrepareOptions(**QUIET))
    with pytest.raises(CorpusError, match=r"c\.txt.*unknown input format"):
        prepare_corpus([corpus, str(tmp_path / "c.txt")], str(tmp_path / "out"), PrepareOptions(**QUIET))
    assert not (tmp_path / "out").exists()


def test_all_rows_rejected_gives_an_empty_but_valid_corpus(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", ["{oops", '{"input": "no target"}'])
    out = tmp_path / "out"
    summary = prepare_corpus([path], str(out), PrepareOptions(**QUIET))
    assert (summary.written, summary.domains) == (0, {})
    assert shards.open_domain_sources(str(out)) == {}


def test_split_names_are_sanitized_and_unique():
    names = shards.split_names(["Number Theory", "number-theory", "all", "!!!", "Ünï", "a"])
    assert names == {
        "!!!": "domain",
        "Number Theory": "number_theory",
        "a": "a",
        "all": "all_2",
        "number-theory": "number_theory_2",
        "Ünï": "uni",
    }


def test_load_manifest_errors_name_the_directory(tmp_path):
    with pytest.raises(CorpusError, match=f"{tmp_path}.*not a prepared corpus"):
        shards.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorpusError, match="corrupt"):
        shards.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CorpusError, match="format_version 99"):
        shards.load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "domains": []}))
    with pytest.raises(CorpusError, match="corrupt manifest.*tokenizer.*domains is not an object"):
        shards.load_manifest(str(tmp_path))


def test_source_labels_are_short_and_unique():
    assert source_labels(["/d/x/train.json", "/d/y/train.json", "/d/z.jsonl"]) == [
        "x/train.json",
        "y/train.json",
        "z.jsonl",
    ]
    assert source_labels(["tfds:mnist:train"]) == ["tfds:mnist:train"]


def test_hf_tokenizer_corpus_records_its_fingerprint(tmp_path, corpus):
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([r["input"] for r in ROWS] * 20),
        model_writer=model,
        vocab_size=40,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "spiece.model").write_bytes(model.getvalue())
    options = PrepareOptions(tokenizer_kind="hf", tokenizer_path=str(tmp_path / "tok"), **QUIET)
    prepare_corpus([corpus], str(tmp_path / "out"), options)
    tok = load_tokenizer("hf", str(tmp_path / "tok"))
    assert shards.load_manifest(str(tmp_path / "out"))["tokenizer"] == tok.to_dict()
    source = shards.open_domain_sources(str(tmp_path / "out"))["Number Theory"]
    assert sorted(tok.decode(ex["inputs"]) for ex in source) == ["What is 2+2?", "What is 3*3?"]


# ---------------------------------------------------------------------------- fuzzing

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=6,
)
_WORD = st.sampled_from(["a", "b", "é✓", "</s>", "So the answer is"]) | st.text(min_size=1, max_size=30)
_TEXT = _WORD | st.sampled_from(["", " ", "\ud800"]) | st.text(max_size=30)
_DOMAIN = (
    st.sampled_from(["alg", "Alg", "all", "ünï", "!!", "a b"])
    # Labels, not paths: long (past the file-name limit), path-like, and with control characters.
    | st.sampled_from(["../../etc/passwd", "a/b", "/", ".", "..", "C:\\x", "nul\x00", "esc\x1b[0m", "tab\tx"])
    | st.text(min_size=213, max_size=400)
    | st.builds(lambda n, tail: "d" * n + tail, st.integers(60, 300), st.text(max_size=3))
)
_GOOD_ROW = st.fixed_dictionaries(  # mostly valid rows, so that writing and dedupe get exercised
    {"input": _WORD, "target": _WORD | st.integers()},
    optional={"domain": _DOMAIN, "rationale": _WORD, "meta": st.dictionaries(st.text(max_size=3), _JSON)},
)
_ANY_ROW = st.fixed_dictionaries(
    {},
    optional={
        "input": _TEXT | _JSON,
        "target": _TEXT | st.integers() | st.floats() | _JSON,
        "domain": _DOMAIN | _JSON,
        "rationale": _TEXT | _JSON,
        "meta": _JSON,
        "extra": _JSON,
    },
)


def _line(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value, ensure_ascii=bool(len(str(value)) % 2), allow_nan=True).encode("utf-8", "surrogatepass")


_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
_LINES = st.lists(
    _GOOD_ROW.map(_line)
    | _GOOD_ROW.map(_line)
    | _ANY_ROW.map(_line)
    | _BYTES
    | st.sampled_from([b"", b"  ", b"\t", b"\r", b"{", b"[]", b"null", b'"x"']),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=_LINES,
    max_len=st.integers(2, 60) | st.just(512),
    dedupe=st.booleans(),
    truncate=st.sampled_from(["none", "input", "target", "both"]),
)
def test_fuzzed_corpus_every_line_is_accounted_for(tmp_path_factory, lines, max_len, dedupe, truncate):
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    options = PrepareOptions(
        mapping=FieldMapping(id=None),
        max_input_len=max_len,
        max_target_len=max_len,
        drop_duplicate_examples=dedupe,
        truncate=truncate,
        **QUIET,
    )
    summary = prepare_corpus([str(path)], str(tmp / "out"), options)
    manifest = shards.load_manifest(str(tmp / "out"))
    splits = [info["split"] for info in manifest["domains"].values()]
    assert len(set(splits)) == len(splits) and all(len(s) <= shards.MAX_SPLIT_CHARS + 4 for s in splits)
    assert not any(re.search(r"[\x00-\x1f\x7f-\x9f]", d) for d in manifest["domains"])

    physical = path.read_bytes().split(b"\n")
    if physical[-1] == b"":
        physical.pop()
    blank = {
        i for i, raw in enumerate(physical, 1) if not (raw.removeprefix(b"\xef\xbb\xbf") if i == 1 else raw).strip()
    }
    assert summary.read + summary.blank == len(physical) and summary.blank == len(blank)
    assert summary.read == summary.written + summary.rejected_total
    rejects = read_rejects(tmp / "out")
    assert all(r["reason"] in REJECT_REASONS and r["source"] == str(path) for r in rejects)
    rejected_lines = [r["line"] for r in rejects]
    written_lines = [
        int(ex["id"].rsplit(":", 1)[1])
        for source in shards.open_domain_sources(str(tmp / "out")).values()
        for ex in source
    ]
    assert len(set(rejected_lines + written_lines)) == len(rejected_lines) + len(written_lines)
    assert set(rejected_lines) | set(written_lines) == set(range(1, len(physical) + 1)) - blank
