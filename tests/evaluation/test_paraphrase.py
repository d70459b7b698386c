"""Paraphrase measures on small hand-computed cases, and against sacrebleu called directly."""

from __future__ import annotations

import pytest
import sacrebleu

from distill_jax.evaluation import paraphrase

BLEU_CAT = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25  # "the cat sat on the mat" vs "... on a mat", both ways


def test_distinct_n_by_hand() -> None:
    texts = ["a b a", "A b"]  # lowercased: unigrams a b a a b, bigrams (a b) (b a) (a b)
    assert paraphrase.distinct_n(texts, 1) == pytest.approx(2 / 5)
    assert paraphrase.distinct_n(texts, 2) == pytest.approx(2 / 3)
    assert paraphrase.distinct_n(["one"], 2) == 0.0


def test_self_bleu_by_hand_and_against_sacrebleu() -> None:
    pair = ["the cat sat on the mat", "the cat sat on a mat"]
    assert paraphrase.self_bleu([pair]) == pytest.approx(BLEU_CAT, abs=1e-6)
    groups = [["x y z w", "x y z v", "a b c d"], ["lonely"], ["p q r s t", "p q r s t"]]
    direct = [
        sacrebleu.sentence_bleu(text, [o for j, o in enumerate(g) if j != i]).score
        for g in groups
        if len(g) > 1
        for i, text in enumerate(g)
    ]
    assert paraphrase.self_bleu(groups) == pytest.approx(sum(direct) / len(direct))
    assert paraphrase.self_bleu([["only one"], ["each"]]) is None


def test_lexical_diversity_and_ibleu() -> None:
    sources = ["the cat sat on the mat", "dogs bark at night"]
    assert paraphrase.lexical_diversity(sources, sources) == pytest.approx(0.0, abs=1e-9)
    assert paraphrase.lexical_diversity(["the cat sat on a mat"], ["the cat sat on the mat"]) == pytest.approx(
        1 - BLEU_CAT / 100
    )
    paraphrases = ["a cat was sitting on the mat", "at night dogs are barking"]
    references = ["a cat was sitting on the mat", "dogs are barking at night"]
    to_refs = sacrebleu.corpus_bleu(paraphrases, [references]).score
    to_sources = sacrebleu.corpus_bleu(paraphrases, [sources]).score
    assert paraphrase.ibleu(paraphrases, references, sources) == pytest.approx(0.8 * to_refs - 0.2 * to_sources)
    assert paraphrase.ibleu(paraphrases, references, sources, alpha=1.0) == pytest.approx(to_refs)
    # Copying the source is punished: iBLEU of the copy is below that of the real paraphrases.
    assert paraphrase.ibleu(sources, references, sources) < paraphrase.ibleu(paraphrases, references, sources)
    with pytest.raises(ValueError, match="alpha"):
        paraphrase.ibleu(paraphrases, references, sources, alpha=1.5)


def test_syntactic_diversity_by_hand() -> None:
    assert paraphrase.pos_tags("The dog barked.") == ["DT", "NN", "VBD", "."]
    assert paraphrase.pos_tags("The dog barked loudly.") == ["DT", "NN", "VBD", "RB", "."]
    # One inserted tag over the longer sequence of 5.
    assert paraphrase.syntactic_diversity(["The dog barked loudly."], ["The dog barked."]) == pytest.approx(0.2)
    assert paraphrase.syntactic_diversity(["The cat slept."], ["The dog barked."]) == 0.0  # same structure


def test_paraphrase_metrics_uses_the_best_for_pairs_and_all_for_diversity() -> None:
    sources = ["the cat sat on the mat"]
    groups = [["the cat sat on a mat", "a cat is on the mat"]]
    got = paraphrase.paraphrase_metrics(sources, groups, ["a cat sat on the mat"])
    assert got["lexical_diversity"] == pytest.approx(1 - BLEU_CAT / 100)
    assert got["distinct_1"] == pytest.approx(paraphrase.distinct_n(groups[0], 1))
    assert got["self_bleu"] == pytest.approx(paraphrase.self_bleu(groups))
    assert "semantic_similarity" not in got  # no encoder given
    single = paraphrase.paraphrase_metrics(sources, [["the cat sat on a mat"]], ["x"])
    assert "self_bleu" not in single
