"""BalDistill on the embedded long-tailed demo corpus, with the exact program teacher (CPU, minutes).

Generate the corpus first (`distill-jax demo` writes it, or
`python -c "from distill_jax.data.demo_corpus import write_demo_corpus; write_demo_corpus('CORPUS')"`),
then: distill-jax distill --config=configs/baldistill_demo.py --config.distill.pool=CORPUS/train.jsonl \
      --config.distill.eval_data=CORPUS/test.jsonl --workdir=DIR
The pool's rows carry correct rationales: the program teacher returns them for annotations and
generates new, unseen examples of a domain for tail synthesis.
"""

from distill_jax.config import demo_config


def get_config():
    c = demo_config()
    c.distill.pool_fields.update(dict(id="id", domain="domain", input="input", answer="target", rationale="rationale"))
    c.distill.budget = 1000  # 1/6 of the 6000-row pool.
    c.distill.stages = 3
    c.distill.methods = "random,adaptive"
    c.distill.epochs_per_stage = 10.0  # ~625 steps per method in all.
    c.distill.min_steps_per_stage = 50
    c.distill.ifd_max_candidates = 100  # Per domain and stage: keeps scoring to seconds on a CPU.
    c.distill.ifd_max_new_tokens = 104  # The demo's longest target (data.max_target_len).
    c.distill.ifd_batch_size = 64
    c.teacher.kind = "program"
    c.optimizer.decay = "constant"  # As in BalDistill (2e-4 constant after warmup, scaled to this tiny model).
    c.optimizer.warmup_steps = 30
    c.train.checkpoint_every = 200
    c.eval.decode_examples_per_domain = 30
    c.eval.max_examples_per_domain = 50
    return c
