"""BalDistill on its own MATH data (Zhou et al. 2024): 7 long-tailed subject domains, the pool teacher.

The pool teacher serves the paper's stored GPT-4 rationales for pool problems and its stored
synthetic problems for tail domains (../shared/data/baldistill_math; override the paths for your
copy). Budget setting 1 of the paper: 300 per domain x 7 = 2100 calls over K=5 stages.

  distill-jax distill --config=configs/baldistill_math.py --workdir=DIR \
      [--config.distill.pool=.../corpus.jsonl --config.distill.eval_data=.../test_corpus.jsonl \
       --config.teacher.pool_outputs=... --config.teacher.pool_synthetic=...]

Pool problems without a stored rationale come back `unavailable` (not charged); the stage's unspent
budget rolls forward. A T5-small-sized student on an accelerator is the intended setting; on a CPU
shrink the budget, the eval set and model.size to see the machinery run.
"""

from distill_jax.presets import accelerator_config

DATA = "../shared/data/baldistill_math"


def get_config():
    c = accelerator_config("small", batch_size=16)
    c.tokenizer.kind = "byt5"
    c.prepare.max_input_len = 1024
    c.prepare.max_target_len = 1024
    # The stored rationales already end "The answer is: X"; the template still appends the gold answer
    # in the student's own format so answer extraction is uniform.
    c.prepare.target_template = "{rationale} So the answer is {target}."
    c.distill.pool = f"{DATA}/corpus.jsonl"
    c.distill.eval_data = f"{DATA}/test_corpus.jsonl"
    c.distill.pool_fields.update(dict(id="", domain="source", input="text", answer="label"))
    c.distill.budget = 2100
    c.distill.stages = 5
    c.distill.methods = "random,naive,adaptive"
    c.distill.epochs_per_stage = 8.0  # The paper's 8 epochs.
    c.distill.ifd_max_new_tokens = 200  # As in the paper's code.
    c.teacher.kind = "pool"
    c.teacher.pool_outputs = f"{DATA}/math_chatgpt_cot_train_count_300.jsonl"
    c.teacher.pool_synthetic = f"{DATA}/math_chatgpt_cot_train_composed.jsonl"
    c.teacher.pool_fields.update(dict(input="text", rationale="rationale", answer="", domain="source"))
    c.teacher.pool_synthetic_answer = "gt_choice"
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-4  # The paper's constant LR with 3% warmup.
    c.optimizer.decay = "constant"
    c.optimizer.warmup_steps = 30
    c.optimizer.weight_decay = 0.0
    c.eval.decode_examples_per_domain = 100
    c.eval.max_decode_len = 400  # The paper's evaluation length.
    c.eval.head_fraction = 0.5
    return c
