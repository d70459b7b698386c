"""A T5 v1.1 / Flan-T5 small-shaped student (77M params) for a GPU or TPU slice, bf16 compute.

Set data.train_dir/eval_dir to `distill-jax prepare` outputs (tokenized with the same tokenizer:
tokenizer.kind="hf", tokenizer.path=a local T5 tokenizer dir, for the 32k sentencepiece vocab).
"""

from distill_jax.config import default_config


def get_config():
    c = default_config()
    c.model.size = "small"
    c.model.dtype = "bfloat16"
    c.model.dropout_rate = 0.1
    c.data.max_input_len = 512
    c.data.max_target_len = 256
    c.train.steps = 20_000
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.optimizer.name = "adafactor"  # T5's optimizer; factored moments keep optimizer memory small.
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 1000
    c.optimizer.decay = "rsqrt"
    c.optimizer.weight_decay = 0.0
    c.eval.every = 2000
    return c
