"""BalDistill on a real long-tailed mix: CommonsenseQA with PaLM rationales (head), BBH tasks with Codex CoT (tails).

Build the mix from ../shared first (scripts/build_cqa_bbh_mix.py documents the sources and files):

  python scripts/build_cqa_bbh_mix.py --shared=../shared --out=runs/cqa_bbh_mix
  distill-jax distill --config=configs/baldistill_cqa_bbh.py --workdir=runs/cqa_bbh \
      [--config.distill.pool=runs/cqa_bbh_mix/pool.jsonl ...]   # paths below assume that --out

The pool holds 2000 CommonsenseQA questions and 40 questions of each of three BBH tasks; the teacher
is the pool teacher over the stored PaLM/Codex outputs (wrong teacher answers are dropped and paid).
Tail synthesis hands out the tasks' other Codex-answered questions, labelled with Codex's own answer.
Sized for a 2-core CPU: a tiny byte-level student from scratch, 600 calls over 3 stages, three
methods in ~30-60 minutes. BUILD_NOTES.md ("BalDistill on real teacher data") has the measured table.
"""

from distill_jax.presets import demo_config

MIX = "runs/cqa_bbh_mix"


def get_config():
    c = demo_config()
    c.prepare.max_input_len = 384  # Longest input in the mix: 342 bytes (+ EOS).
    c.prepare.max_target_len = 352  # Longest rationale + "So the answer is X.": 338 bytes.
    c.distill.pool = f"{MIX}/pool.jsonl"
    c.distill.eval_data = f"{MIX}/eval.jsonl"
    c.distill.pool_fields.update(dict(id="id", domain="domain", input="input", answer="answer", rationale="rationale"))
    c.distill.budget = 600  # Calls; ~28% of the pool.
    c.distill.stages = 3
    c.distill.methods = "random,naive,adaptive"
    c.distill.epochs_per_stage = 8.0  # The paper's 8.
    c.distill.min_steps_per_stage = 50
    c.distill.ifd_max_candidates = 150  # Head candidates scored per stage: seconds, not minutes, on a CPU.
    c.distill.ifd_max_new_tokens = 160
    c.distill.ifd_batch_size = 32
    c.teacher.kind = "pool"
    c.teacher.pool_outputs = f"{MIX}/outputs.jsonl"
    c.teacher.pool_synthetic = f"{MIX}/synthetic.jsonl"
    c.teacher.pool_fields.update(dict(input="input", rationale="rationale", answer="answer", domain="domain"))
    c.teacher.pool_synthetic_answer = "gt_choice"
    c.optimizer.decay = "constant"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.warmup_steps = 30
    c.train.batch_size = 32
    c.train.checkpoint_every = 200
    c.eval.batch_size = 50
    c.eval.max_examples_per_domain = 50
    c.eval.decode_examples_per_domain = 40
    c.eval.max_decode_len = 352
    c.eval.head_fraction = 0.5  # CommonsenseQA alone holds > 90% of the pool: it is the head.
    return c
