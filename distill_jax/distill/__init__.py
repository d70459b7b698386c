"""The multi-stage balanced distillation scheduler (BalDistill, Zhou et al. 2024) and its parts.

balancing.py  per-stage, per-domain quotas (random, naive, adaptive) and the head/tail split.
ledger.py     the append-only budget ledger: every teacher call reserved before it is made.
pool.py       the candidate pool: examples the scheduler may buy annotations for, and the eval hold-out.
ifd.py        IFD scores (PPL(y|x) / PPL(y) of the student's own answer): which head examples to buy.
purchase.py   turning teacher responses into training rows: answer checks, de-duplication.
scheduler.py  the stage loop: plan -> buy -> prepare -> train -> evaluate, resumable at every phase.
report.py     per-stage tables, the method comparison, plots.
"""
