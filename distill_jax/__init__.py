"""distill_jax: sequence-level knowledge distillation of big teachers into small seq2seq students.

Packages (imports point downwards only):
  cli/         absl entry points; parse flags and configs, call the packages below.
  distill/     multi-stage scheduler driving training with teacher data.
  teachers/    teacher interfaces (stored pools, HTTP endpoints), budget-metered.
  training/    mesh and partitioning, train state, jitted step, checkpoints, the train loop.
  evaluation/  per-domain metrics, decoding-based evaluation, reports.
  models/      Flax T5-family student and decoding.
  data/        teacher-corpus validation, tokenization, ArrayRecord shards, grain input pipeline.
"""

__version__ = "0.1.0"
