"""Paraphrase quality and diversity (the measures surveyed by Jayawardena & Yapa 2024).

A good paraphrase keeps the meaning of its source while changing its wording and structure, and a
model asked for n paraphrases should not return n copies. Each function below measures one of
those; BUILD_NOTES.md has the definitions in one place:

- semantic similarity: cosine of sentence embeddings of source and paraphrase (embeddings.py);
- lexical diversity: 1 - BLEU(paraphrases vs sources) / 100, corpus BLEU;
- distinct-n: distinct n-grams / all n-grams over every returned paraphrase (Li et al. 2016);
- self-BLEU: mean BLEU of each returned paraphrase against the other n - 1 of its input (Zhu et al.
  2018); lower is more diverse;
- syntactic diversity: edit distance between the POS-tag sequences of source and paraphrase,
  divided by the longer sequence, averaged;
- iBLEU (Sun & Zhou 2012): alpha * BLEU(paraphrases, references) - (1 - alpha) * BLEU(paraphrases,
  sources), corpus BLEU points, alpha 0.8 by default.

POS tags come from TextBlob's PatternTagger (Pattern's Brill-style English tagger, whose lexicon
ships inside the textblob wheel): it needs no NLTK or spaCy model download, so it runs offline.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import nltk
import numpy as np
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

if TYPE_CHECKING:
    from distill_jax.evaluation.embeddings import SentenceEncoder

DEFAULT_IBLEU_ALPHA = 0.8
_TOKENIZE = Tokenizer13a()  # BLEU's own tokenization, so n-gram counts agree with the BLEU scores


def lexical_diversity(paraphrases: Sequence[str], sources: Sequence[str]) -> float:
    """1 - corpus BLEU(paraphrases, sources) / 100: 0 for copies of the source, 1 for no shared n-gram."""
    return 1.0 - sacrebleu.corpus_bleu(list(paraphrases), [list(sources)]).score / 100.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (lowercased, 13a-tokenized); 0 when there are none."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = _TOKENIZE(text.lower()).split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def self_bleu(groups: Sequence[Sequence[str]]) -> float | None:
    """Mean sentence BLEU of each text against the other texts of its group; None without a group of 2+.

    A group is the n paraphrases returned for one input; groups of one text are skipped.
    """
    scores = [
        sacrebleu.sentence_bleu(text, [other for j, other in enumerate(group) if j != i]).score
        for group in groups
        if len(group) > 1
        for i, text in enumerate(group)
    ]
    return float(np.mean(scores)) if scores else None


def ibleu(
    paraphrases: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str],
    alpha: float = DEFAULT_IBLEU_ALPHA,
) -> float:
    """Sun & Zhou's iBLEU: rewards matching the references and penalises copying the source."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"iBLEU alpha must be in [0, 1], got {alpha}")
    to_references = sacrebleu.corpus_bleu(list(paraphrases), [list(references)]).score
    to_sources = sacrebleu.corpus_bleu(list(paraphrases), [list(sources)]).score
    return alpha * to_references - (1.0 - alpha) * to_sources


@functools.cache
def _tagger():
    from textblob.en.taggers import PatternTagger

    return PatternTagger()


def pos_tags(text: str) -> list[str]:
    """Penn Treebank tags of ``text``'s tokens (TextBlob PatternTagger, offline)."""
    return [tag for _, tag in _tagger().tag(text)]


def syntactic_diversity(paraphrases: Sequence[str], sources: Sequence[str]) -> float:
    """Mean normalised edit distance between source and paraphrase POS sequences (0 = same structure)."""
    distances = []
    for paraphrase, source in zip(paraphrases, sources):
        a, b = pos_tags(source), pos_tags(paraphrase)
        distances.append(nltk.edit_distance(a, b) / max(len(a), len(b), 1))
    return float(np.mean(distances))


def paraphrase_metrics(
    sources: Sequence[str],
    paraphrases: Sequence[Sequence[str]],
    references: Sequence[str],
    encoder: SentenceEncoder | None = None,
    alpha: float = DEFAULT_IBLEU_ALPHA,
) -> dict[str, float]:
    """All paraphrase measures for one set of inputs; ``paraphrases[i]`` holds input i's returned texts, best first.

    Pairwise measures use the best paraphrase; distinct-n and self-BLEU use all of them. Semantic
    similarity needs ``encoder``; self-BLEU needs several paraphrases per input.
    """
    if not (len(sources) == len(paraphrases) == len(references)) or not sources:
        raise ValueError("need one non-empty list of paraphrases and one reference per source")
    best = [group[0] if group else "" for group in paraphrases]
    everything = [text for group in paraphrases for text in group]
    out = {
        "lexical_diversity": lexical_diversity(best, sources),
        "distinct_1": distinct_n(everything, 1),
        "distinct_2": distinct_n(everything, 2),
        "syntactic_diversity": syntactic_diversity(best, sources),
        "ibleu": ibleu(best, references, sources, alpha),
    }
    group_bleu = self_bleu(paraphrases)
    if group_bleu is not None:
        out["self_bleu"] = group_bleu
    if encoder is not None:
        out["semantic_similarity"] = float(np.mean(encoder.similarity(list(sources), best)))
    return out
