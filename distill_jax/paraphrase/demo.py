"""Paraphrase distillation end to end on real ChatGPT paraphrases: the chain `distill-jax paraphrase-demo` runs.

APTY (ChatGPT paraphrases with human judgements) -> paraphrase corpus (filters, rejects, split by
source) -> prepare -> train the configured student -> decode the held-out sources under each
decoding preset -> student and teacher side by side (semantic similarity, diversity, self-BLEU,
iBLEU, size and speed ratios) -> report with the fidelity-diversity frontier plot. Every step is
also its own command (paraphrase-corpus, prepare, train, eval --presets); this wires them.
"""

from __future__ import annotations

import os

import ml_collections
from absl import logging


def run_paraphrase_demo(
    workdir: str,
    config: ml_collections.ConfigDict,
    apty_path: str,
    teacher_params: float = 0.0,
    teacher_examples_per_s: float = 0.0,
) -> tuple[dict, str]:
    """Runs the chain into ``workdir``; returns (comparison report, printable text)."""
    from distill_jax.data.prepare import PrepareOptions, prepare_corpus
    from distill_jax.evaluation.compare import compare_predictions
    from distill_jax.evaluation.decoding_presets import expand
    from distill_jax.evaluation.generate import DecodeSettings
    from distill_jax.evaluation.paraphrase_sets import leave_one_out_sets
    from distill_jax.evaluation.report import paraphrase_table
    from distill_jax.evaluation.scoring import ScoringOptions
    from distill_jax.paraphrase import corpus as paraphrase_corpus
    from distill_jax.training.trainer import train

    if not os.path.isfile(apty_path):
        raise FileNotFoundError(
            f"{apty_path} not found: pass --apty=PATH/apty_base.csv (APTY, see ../shared/README.md)"
        )
    corpus_dir = os.path.join(workdir, "corpus")
    corpus = paraphrase_corpus.build_from_config(config, "apty", [apty_path], corpus_dir)
    logging.info("Paraphrase corpus:\n%s", corpus.format_table())
    options = PrepareOptions.from_config(config)
    data_dirs = {}
    for split in ("train", "validation"):
        data_dirs[split] = os.path.join(workdir, "data", split)
        summary = prepare_corpus([os.path.join(corpus_dir, f"{split}.jsonl")], data_dirs[split], options)
        logging.info("Prepared %s:\n%s", split, summary.format_table())
    with config.unlocked():
        config.data.train_dir = data_dirs["train"]
        config.data.eval_dir = data_dirs["validation"]
    run_dir = os.path.join(workdir, "run")
    result = train(config, run_dir)
    if result.preempted:  # SIGTERM: the checkpoint is saved; scoring a half-trained student would mislead.
        raise SystemExit(f"paraphrase-demo: preempted at step {result.step}; re-run the same command to resume")

    sets = leave_one_out_sets(os.path.join(corpus_dir, "validation.jsonl"), os.path.join(workdir, "eval_sets"))
    report, _ = compare_predictions(
        [("student", run_dir), ("teacher", sets["paths"]["teacher"])],
        os.path.join(workdir, "report"),
        data=sets["paths"]["eval"],
        options=ScoringOptions(groups=("paraphrase", "overlap")),
        settings=DecodeSettings(seed=config.seed, max_decode_len=config.data.max_target_len),
        teacher="teacher",
        presets=expand(config.paraphrase.eval_presets),
        param_counts={"teacher": teacher_params} if teacher_params else None,
        throughputs={"teacher": teacher_examples_per_s} if teacher_examples_per_s else None,
    )
    text = "\n".join(
        [
            corpus.format_table(),
            "",
            f"held-out sources: {sets['sources']} scored (reference = each source's first teacher paraphrase; the "
            f"teacher set = its other {sets['teacher_paraphrases']}); "
            f"{sets['single_paraphrase_sources_skipped']} with a single paraphrase skipped",
            "",
            paraphrase_table(report),
            "",
            f"Report (every measure, head/tail/macro/micro): {os.path.join(workdir, 'report', 'report.md')}; "
            "the frontier plot: plots/fidelity_diversity.png",
        ]
    )
    return report, text
