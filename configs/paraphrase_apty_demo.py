"""Paraphrase distillation demo on APTY's real ChatGPT paraphrases (Jayawardena & Yapa 2024's chain, CPU minutes).

  distill-jax paraphrase-demo --workdir=DIR [--config=configs/paraphrase_apty_demo.py] \
      [--apty=../shared/data/apty_chatgpt_paraphrase_types/apty_base.csv]

A tiny byte-level T5 trained from scratch on ~300 filtered pairs: it shows the chain and the
report (fidelity, diversity, student/teacher ratios, the frontier plot), not the paper's quality.
The paper's students are configs/paraphrase_{t5_small,flan_t5_small,bart_base}_lora.py.
"""

from distill_jax.presets import paraphrase_demo_config


def get_config():
    return paraphrase_demo_config()
