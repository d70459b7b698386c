"""distill_jax: sequence-level knowledge distillation of big teachers into small seq2seq students.

Packages (imports point downwards only):
  cli/         absl entry points; parse flags and configs, call the packages below.
  distill/     the BalDistill stage scheduler: budget ledger, quotas, IFD selection, stage loop, report.
  teachers/    where teacher outputs come from: stored pools, OpenAI-compatible endpoints, the demo's program.
  training/    mesh and partitioning, train state, jitted step, checkpoints, the train loop.
  evaluation/  per-domain metrics, decoding-based evaluation, reports.
  models/      Flax T5-family student, LoRA adapters, decoding, Hugging Face interop.
  data/        teacher-corpus validation, tokenization, ArrayRecord shards, grain input pipeline.
  config.py    every configuration knob with its default (configs/ override it).
  atomic.py    write-beside-then-rename helpers, so no output is ever half written.
  multihost.py who writes, barriers and gathers across processes (a bottom module every package may use).
"""

__version__ = "0.1.0"
