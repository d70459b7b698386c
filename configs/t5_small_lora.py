"""A T5 v1.1 / Flan-T5 small-shaped student trained with LoRA, using BalDistill's adapter settings.

BalDistill (Zhou et al. 2024) trains r=8, alpha=16, dropout 0.1 adapters at a constant 2e-4 with
3% warmup and batch 16; the paraphrase students of Jayawardena & Yapa 2024 are LoRA T5-small /
Flan-T5-small. Start from a local checkpoint with --config.model.hf_dir=DIR (and prepare the data
with --config.tokenizer.kind=hf --config.tokenizer.path=DIR); adapters on a random base learn little.
"""

from distill_jax.presets import accelerator_config


def get_config():
    c = accelerator_config("small", batch_size=16)
    c.model.lora_rank = 8
    c.model.lora_alpha = 16.0
    c.model.lora_dropout = 0.1
    c.model.lora_targets = "q,v"
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-4
    c.optimizer.decay = "constant"
    c.optimizer.warmup_steps = 600  # 3% of train.steps (20k).
    c.optimizer.weight_decay = 0.0
    return c
