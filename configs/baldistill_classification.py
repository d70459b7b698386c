"""BalDistill on your own long-tailed classification pool: the label is both the domain and the answer.

For topic / intent / sentiment-style data (R52, Reuters, ...): one file of rows {"text", "label"}
(JSONL/CSV/Parquet) is the pool, a second one the test set, and the teacher's stored outputs (e.g.
ChatGPT rationales, {"text", "rationale", "label"}) and synthesized tail examples are pool-teacher
files. Rows whose field names differ need only the two maps below (or --config.distill.pool_fields.input=...).

  distill-jax distill --config=configs/baldistill_classification.py --workdir=runs/topics \
      --config.distill.pool=pool.jsonl --config.distill.eval_data=test.jsonl \
      --config.teacher.pool_outputs=rationales.jsonl --config.teacher.pool_synthetic=synthetic.jsonl

Answers are checked by the label a rationale names (distill.label_set="pool": the pool's labels), the
student learns the label ({target}; use "{rationale} So the answer is {target}." for rationale targets
with a student big enough to write them), over-long inputs are cut to prepare.max_input_len rather than
rejected, and report.md adds macro-F1 over labels (the paper's metric for its classification sets).
"""

from distill_jax.presets import demo_config

TEXT, LABEL = "text", "label"  # The pool's columns: change these two for other names.


def get_config():
    c = demo_config()
    c.prepare.max_input_len = 256  # Bytes of text the tiny byte-level student reads (+ EOS) ...
    c.prepare.truncate = "input"  # ... longer texts are cut, not rejected (counted in each manifest).
    c.prepare.max_target_len = 32  # The longest label (+ EOS).
    c.prepare.target_template = "{target}"
    c.distill.pool_fields.update(dict(id="", domain=LABEL, input=TEXT, answer=LABEL, rationale=""))
    c.distill.label_set = "pool"
    c.distill.budget = 1000.0  # Calls; the paper budgets ~50 per label (R52: 2600 for 52 labels).
    c.distill.stages = 3
    c.distill.methods = "random,naive,adaptive"
    c.distill.epochs_per_stage = 10.0
    c.distill.ifd_max_candidates = 100
    c.distill.ifd_max_new_tokens = 32
    c.teacher.kind = "pool"
    c.teacher.pool_fields.update(dict(input=TEXT, rationale="rationale", answer=LABEL, domain=LABEL))
    c.teacher.pool_synthetic_answer = LABEL
    c.eval.max_examples_per_domain = 50
    c.eval.decode_examples_per_domain = 50
    c.eval.head_fraction = 0.5
    return c
