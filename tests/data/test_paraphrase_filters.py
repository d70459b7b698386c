"""Each paraphrase filter on hand-made pairs; the counts and the first-filter-wins accounting."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_jax.config import default_config
from distill_jax.data.corpus import CorpusError
from distill_jax.data.paraphrase_filters import (
    FILTERS,
    Blocklist,
    FilterSettings,
    apply_filters,
    jaccard,
    normalize,
)
from distill_jax.data.paraphrase_sources import Candidate

SOURCE = "The committee approved the new budget on Tuesday."
DEFAULTS = FilterSettings.from_config(default_config().paraphrase)


def run(pairs, settings=DEFAULTS, blocklist=None):
    candidates = [
        Candidate(s, p, f"f:{i}", judged) for i, (s, p, judged) in enumerate((*pair, None)[:3] for pair in pairs)
    ]
    result = apply_filters(candidates, settings, blocklist)
    return result, {r.candidate.origin: (r.filter, r.detail) for r in result.rejected}


@pytest.mark.parametrize(
    "paraphrase, filter_name, detail",
    [
        ("On Tuesday the committee passed the new budget.", None, None),
        ("the committee approved the new budget on tuesday", "identical_to_source", "case, punctuation"),
        ("The committee \u0007approved the budget on Tuesday.", "garbled", "U+0007"),
        ("The committee approved \ufffd budget on Tuesday.", "garbled", "replacement"),
        ("$$$ 12,345.00 / 67.89 %%% ### 1234567 !!!", "garbled", "letters"),
        ("The committee approved the the the the budget on Tuesday.", "garbled", "'the' repeats 4+"),
        ("It passed on Tuesday on Tuesday on Tuesday on Tuesday.", "garbled", "'on tuesday' repeats"),
        ("Altered: The committee passed the budget on Tuesday.", "garbled", "'Altered:'"),
        ("The budget passed on Tuesday. Justification: a synonym.", "garbled", "Justification:"),
        ('The budget was approved Tuesday. (Substitution: "passed")', "garbled", "(Substitution:"),
        ("Budget approved.", "length_ratio", "= 0.33"),
        (
            "On Tuesday, " + "after a very long and winding debate about many other things, " * 2 + "it passed.",
            "length_ratio",
            "outside",
        ),
    ],
)
def test_each_row_filter(paraphrase, filter_name, detail):
    result, rejected = run([(SOURCE, paraphrase)])
    if filter_name is None:
        assert not rejected and len(result.kept) == 1
        return
    assert rejected["f:0"][0] == filter_name and detail in rejected["f:0"][1]
    assert result.counts()[filter_name] == 1


def test_ellipsis_and_an_emphatic_triple_are_not_loops():
    result, rejected = run([(SOURCE, "The committee . . . approved the budget on Tuesday, please, please, please.")])
    assert not rejected


def test_human_judgement_duplicates_and_near_duplicates():
    other = "A different source sentence about the weather today."
    result, rejected = run(
        [
            (SOURCE, "On Tuesday the committee passed the new budget.", True),
            (SOURCE, "On Tuesday the committee passed the new budget.", True),  # exact duplicate
            (SOURCE, "On Tuesday, the committee passed the new budget!", None),  # near: same words, same order
            (SOURCE, "The new budget was passed by the committee on Tuesday.", None),  # reordered: kept
            (SOURCE, "The committee rejected the budget.", False),  # judged not a paraphrase
            (other, "On Tuesday the committee passed the new budget.", None),  # same text, other source: kept
        ]
    )
    assert {k: v[0] for k, v in rejected.items()} == {
        "f:1": "exact_duplicate",
        "f:2": "near_duplicate",
        "f:4": "judged_not_paraphrase",
    }
    assert "the same pair as f:0" == rejected["f:1"][1] and "with f:0" in rejected["f:2"][1]
    assert [c.origin for c in result.kept] == ["f:0", "f:3", "f:5"]
    assert list(result.counts()) == list(FILTERS)


def test_filters_can_be_switched_off():
    off = dataclasses.replace(
        DEFAULTS,
        require_judged_paraphrase=False,
        drop_garbled=False,
        drop_identical_to_source=False,
        min_length_ratio=0,
        max_length_ratio=0,
        drop_exact_duplicates=False,
        near_duplicate_jaccard=0,
        blocklist="",
    )
    pairs = [(SOURCE, SOURCE, False), (SOURCE, SOURCE, False), (SOURCE, "x \u0007", None)]
    result, rejected = run(pairs, off)
    assert not rejected and len(result.kept) == 3


def test_blocklist_default_file_custom_file_and_bad_file(tmp_path):
    default = Blocklist.load("default")
    assert default.match("What the FUCKING hell") == "fucking" and default.match("Shiitake and Dickens") is None
    result, rejected = run([("You bullshit artist, he said.", "He called him a bullshit artist.")], blocklist=default)
    assert rejected["f:0"][0] == "blocklist" and "the source contains 'bullshit'" in rejected["f:0"][1]

    mine = tmp_path / "words.txt"
    mine.write_text("# mine\nbudget cut*\nTuesday\n")
    custom = Blocklist.load(str(mine))
    assert custom.match("Budget-cutting ahead") == "budget cutting" and custom.match("on tuesday.") == "tuesday"
    assert Blocklist.load("") is None
    mine.write_text("fine\nbad;term\n")
    with pytest.raises(CorpusError, match=r"words.txt:2: 'bad;term' is not a word list term"):
        Blocklist.load(str(mine))
    with pytest.raises(CorpusError, match="cannot read"):
        Blocklist.load(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(min_letter_fraction=1.5), "min_letter_fraction"),
        (dict(max_repeats=1), "max_repeats"),
        (dict(near_duplicate_jaccard=2.0), "near_duplicate_jaccard"),
        (dict(min_length_ratio=3.0, max_length_ratio=2.0), "above max_length_ratio"),
        (dict(artifact_pattern="(unclosed"), "not a valid regular expression"),
    ],
)
def test_bad_settings_fail_before_any_row(override, message):
    with pytest.raises(CorpusError, match=message):
        apply_filters([], dataclasses.replace(DEFAULTS, **override))


def test_similarity_helpers():
    assert normalize("  The CAT, sat!\u00a0") == "the cat sat"
    assert jaccard("a b c", "a b c") == 1.0 and jaccard("a b", "c d") == 0.0
    assert jaccard("red fish blue fish", "blue fish red fish") < 1.0  # order-aware


WORDS = ["alpha", "beta", "gamma", "delta", "the", "a", "committee", "budget", "\u0007", "Altered:", "fuck"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=9).map(" ".join),
            st.sampled_from([True, False, None]),
        ),
        max_size=25,
    )
)
def test_nothing_is_silently_dropped(pairs):
    result, _ = run(pairs, blocklist=Blocklist.load("default"))
    assert len(result.kept) + len(result.rejected) == len(pairs)
    assert sum(result.counts().values()) == len(result.rejected)
    assert all(r.filter in FILTERS and r.detail for r in result.rejected)
