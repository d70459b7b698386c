"""Paraphrase distillation (Jayawardena & Yapa 2024) as workflows over the packages below.

corpus.py  gather candidates (stored ChatGPT paraphrases or a teacher) -> filters -> split -> files.
demo.py    the `paraphrase-demo` chain: corpus -> prepare -> train -> decode presets -> report.
"""
