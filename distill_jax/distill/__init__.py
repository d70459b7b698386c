"""The multi-stage balanced distillation scheduler (BalDistill, Zhou et al. 2024) and its parts.

balancing.py      per-stage, per-domain quotas (random, naive, adaptive) and the head/tail split.
ledger.py         the append-only attempt ledger: every teacher call written, with its bound, before it is sent.
spend.py          budgets in calls, tokens or usd over the ledger; pre-flight; the per-stage spend line.
dry_run.py        `distill --dry_run`: planned calls, tokens and cost per stage and method, nothing spent.
pool.py           the candidate pool: examples the scheduler may buy annotations for, and the eval hold-out.
ifd.py            IFD scores (PPL(y|x) / PPL(y) of the student's own answer): which head examples to buy.
purchase.py       turning teacher responses into training rows: answer checks, de-duplication.
scheduler.py      the stage loop: plan -> buy -> prepare -> train -> evaluate, resumable at every phase.
report.py         per-stage tables, the method comparison (markdown and terminal), plots.
demo.py           `distill-jax demo`: random vs BalDistill-N/-A on the generated long-tailed pool.
evaluate_runs.py  the `eval` job over a training run or every method of a distill/demo directory.
"""
