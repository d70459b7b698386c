"""Decoding presets, the per-set paraphrase table and the fidelity-diversity frontier plot."""

from __future__ import annotations

import pytest

from distill_jax.evaluation import decoding_presets
from distill_jax.evaluation.plots import fidelity_diversity_frontier
from distill_jax.evaluation.report import build_comparison_report, paraphrase_table


def test_presets_are_valid_settings_and_keep_seed_and_length():
    for name in decoding_presets.PRESETS:
        settings = decoding_presets.preset(name, seed=7, max_decode_len=33)
        assert (settings.seed, settings.max_decode_len) == (7, 33)
    sampled = decoding_presets.preset("topp90_n5")
    assert (sampled.method, sampled.top_p, sampled.num_return_sequences) == ("sample", 0.9, 5)
    with pytest.raises(ValueError, match="unknown decoding preset 'nucleus'.*greedy"):
        decoding_presets.preset("nucleus")


def test_expand_frontier_without_repeats():
    assert decoding_presets.expand("greedy, frontier") == list(decoding_presets.FRONTIER)
    assert decoding_presets.expand("") == []
    with pytest.raises(ValueError, match="unknown decoding preset"):
        decoding_presets.expand("greedy,bogus")


def _paraphrase_set(sim: float, lex: float, params: int, speed: float | None) -> dict:
    values = dict(count=4, semantic_similarity=sim, lexical_diversity=lex, syntactic_diversity=lex / 2, ibleu=10 * sim)
    return {"per_domain": {"paraphrase": values}, "params": params, "examples_per_s": speed}


def _report():
    sets = {
        "student@greedy": _paraphrase_set(0.95, 0.10, 1_000_000, 200.0),
        "student@topp90_n5": _paraphrase_set(0.80, 0.40, 1_000_000, 100.0),
        "student@bad": _paraphrase_set(0.70, 0.30, 1_000_000, 100.0),  # beaten on both axes by topp90
        "teacher": _paraphrase_set(0.90, 0.50, 1_000_000_000, 2.0),
    }
    return build_comparison_report(sets, {"paraphrase": 10}, ["paraphrase"], [], teacher="teacher")


def test_paraphrase_table_rows_and_teacher_ratios():
    report, table = _report()
    assert report["ratios"]["student@greedy"]["examples_per_s"] == pytest.approx(100.0)
    per_set = paraphrase_table(report)
    assert per_set in table
    lines = per_set.splitlines()
    assert lines[0].split()[:4] == ["set", "sem.sim", "lex.div", "syn.div"]
    greedy = next(line for line in lines if line.startswith("student@greedy")).split()
    # sem.sim, lex.div, syn.div, iBLEU, params, examples/s, then sem.sim/iBLEU/params/speed over the teacher.
    assert greedy[1:] == ["0.950", "0.100", "0.050", "9.500", "1.00M", "200.0", "1.06", "1.06", "0.001", "100"]
    teacher = next(line for line in lines if line.startswith("teacher")).split()
    assert teacher[-4:] == ["-", "-", "-", "-"]


def test_paraphrase_table_empty_without_paraphrase_measures():
    sets = {"a": {"per_domain": {"d": {"count": 1, "answer_accuracy": 1.0}}}}
    report, table = build_comparison_report(sets, {"d": 1}, ["d"], [])
    assert paraphrase_table(report) == "" and "sem.sim" not in table


def test_frontier_plot(tmp_path):
    report, _ = _report()
    path = tmp_path / "frontier.png"
    assert fidelity_diversity_frontier(report, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = {**report, "sets": {"teacher": report["sets"]["teacher"]}, "order": ["teacher"]}
    assert not fidelity_diversity_frontier(single, str(tmp_path / "none.png"))
