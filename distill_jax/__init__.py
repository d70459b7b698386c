"""distill_jax: sequence-level knowledge distillation of big teachers into small seq2seq students.

Packages, top to bottom; a package imports only packages below it (tests/test_import_graph.py checks
every import statement against LAYERS):
  cli/         absl entry points; parse flags and configs, call the packages below.
  paraphrase/  paraphrase distillation workflows: the paraphrase corpus, the paraphrase demo chain.
  distill/     the BalDistill stage scheduler: quotas, IFD selection, purchases, stage loop, report, demo.
  teachers/    where teacher outputs come from (stored pools, OpenAI-compatible endpoints, the demo's
               program, a local checkpoint) and what they cost: budgets and the attempt ledger.
  evaluation/  the generate job, scoring of prediction sets, decoding-consistency check, reports.
  training/    mesh and partitioning, train state, jitted step, the train-time evaluator, checkpoints,
               the train loop.
  models/      Flax T5-family student, LoRA adapters, decoding, Hugging Face interop.
  data/        teacher-corpus validation, tokenization, ArrayRecord shards, grain input pipeline.
  presets.py   named configs (the demos, accelerator shapes) over config.py's defaults.
  config.py    every configuration knob with its default (configs/ and presets override it).
  metrics.py   answer extraction and per-domain metrics (EM/F1, named labels, head/tail split).
  job_output.py  a resumable batch job's output directory (plan.json + chunks), agreed by all processes.
  process_env.py, multihost.py, atomic.py: process set-up, who writes / barriers / gathers across
               processes, write-beside-then-rename helpers.
"""

__version__ = "0.1.0"

# The import layers, top to bottom. Units in one tuple are peers and do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("paraphrase",),
    ("distill",),
    ("teachers",),
    ("evaluation",),
    ("training",),
    ("models", "data"),
    ("presets",),
    ("config", "metrics"),
    ("job_output",),
    ("process_env", "multihost", "atomic"),
    ("storage",),
)
