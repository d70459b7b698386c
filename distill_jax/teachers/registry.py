"""One factory for every teacher: `config.teacher.kind` names a module whose `from_config` builds it.

Each teacher module defines ``from_config(config, workdir, purpose) -> Teacher`` (``config`` is the
whole run config: the program teacher reads the pool paths, the others ``config.teacher``), and
``KINDS`` below names the module and the purposes it can serve. Adding a teacher is that module plus
one line here. Modules are imported only when chosen, so a run never pays for a teacher it does not use.
"""

from __future__ import annotations

import importlib

import ml_collections

from distill_jax.teachers.base import Teacher, TeacherConfigError

# What a teacher is asked to do: annotate/synthesize BalDistill examples, or paraphrase sentences.
PURPOSES = ("distill", "paraphrase")

# kind -> (module that defines from_config, purposes it serves)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pool": ("distill_jax.teachers.pool", ("distill", "paraphrase")),
    "program": ("distill_jax.teachers.program", ("distill",)),
    "openai": ("distill_jax.teachers.openai", ("distill", "paraphrase")),
    "local": ("distill_jax.teachers.local", ("distill",)),
}


def from_config(config: ml_collections.ConfigDict, workdir: str, purpose: str = "distill") -> Teacher:
    """The teacher `config.teacher.kind` names, for `purpose`; TeacherConfigError naming the fix otherwise."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose={purpose!r}: expected one of {PURPOSES}")
    kind = config.teacher.kind
    if kind not in KINDS:
        raise TeacherConfigError(f"teacher.kind={kind!r}: use {', '.join(sorted(KINDS))}")
    module_name, purposes = KINDS[kind]
    if purpose not in purposes:
        able = ", ".join(k for k, (_, p) in sorted(KINDS.items()) if purpose in p)
        raise TeacherConfigError(f"teacher.kind={kind!r} cannot {purpose}; use {able}")
    return importlib.import_module(module_name).from_config(config, workdir, purpose)
