"""A T5 v1.1 / Flan-T5 base-shaped student (248M params) for a GPU or TPU slice, bf16 compute.

Set data.train_dir/eval_dir to `distill-jax prepare` outputs (tokenized with the same tokenizer:
tokenizer.kind="hf", tokenizer.path=a local T5 tokenizer dir, for the 32k sentencepiece vocab), or
model.hf_dir to start from a local Hugging Face checkpoint of this size.
"""

from distill_jax.presets import accelerator_config


def get_config():
    return accelerator_config("base", batch_size=256)
