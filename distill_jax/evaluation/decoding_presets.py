"""Named decoding settings along the paraphrase fidelity-diversity trade-off (Jayawardena & Yapa 2024).

Greedy and beam search return the student's most likely paraphrase (closest to the source, least
varied); sampling with several returns trades fidelity for lexical and syntactic diversity, more so
at higher temperature and larger nucleus. Select one with ``--preset=NAME`` on ``generate``/``eval``,
or several with ``eval --presets=a,b,c`` to decode a checkpoint once per preset and plot the frontier.
The seed and decode length still come from their own flags.
"""

from __future__ import annotations

import dataclasses

from distill_jax.evaluation.generate import DecodeSettings

PRESETS: dict[str, DecodeSettings] = {
    # Fidelity end: one paraphrase, the most likely.
    "greedy": DecodeSettings(method="greedy"),
    "beam4": DecodeSettings(method="beam", num_beams=4),
    # Several distinct beams: still conservative, but n different outputs.
    "beam4_n4": DecodeSettings(method="beam", num_beams=4, num_return_sequences=4),
    # Sampling, from cautious to adventurous; 5 returns each (self-BLEU needs several).
    "topk10_n5": DecodeSettings(method="sample", top_k=10, num_return_sequences=5),
    "topp80_t07_n5": DecodeSettings(method="sample", temperature=0.7, top_p=0.8, num_return_sequences=5),
    "topp90_n5": DecodeSettings(method="sample", top_p=0.9, num_return_sequences=5),
    "topp95_t12_n5": DecodeSettings(method="sample", temperature=1.2, top_p=0.95, num_return_sequences=5),
}
# What `eval --presets=frontier` expands to: one point per step along the trade-off.
FRONTIER = ("greedy", "beam4_n4", "topk10_n5", "topp90_n5", "topp95_t12_n5")


def preset(name: str, *, seed: int = 0, max_decode_len: int = 0) -> DecodeSettings:
    """The named settings with this run's seed and decode length."""
    if name not in PRESETS:
        raise ValueError(f"unknown decoding preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], seed=seed, max_decode_len=max_decode_len)


def expand(names: str) -> list[str]:
    """A comma-separated preset list, where "frontier" stands for :data:`FRONTIER`; unknown names fail."""
    out: list[str] = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        for item in FRONTIER if name == "frontier" else (name,):
            preset(item)
            if item not in out:
                out.append(item)
    return out
