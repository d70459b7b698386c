"""Process-start settings: glibc's malloc tunables, which it reads once, at exec, and never again.

XLA:CPU allocates each step's temporaries afresh (hundreds of MiB); glibc serves blocks over 32 MiB
with a new ``mmap``, so every page is faulted in and zeroed again on every step: ~60,000 faults per
step at the tiny preset, a quarter of its step time (BUILD_NOTES.md, "The issue-8 suite").
``glibc.malloc.hugetlb=1`` makes glibc advise transparent huge pages for those blocks, which cuts
the faults ~60x and the CPU step time by ~25%. Tunables cannot be changed inside a running process,
so the CLI entry point and the benchmark scripts re-exec themselves once with the tunable set.
Set ``DISTILL_JAX_MALLOC_TUNING=0`` to keep the environment as it is.

The CLI also points JAX's persistent compilation cache at ``~/.cache/distill_jax/xla`` (or
``$XDG_CACHE_HOME/distill_jax/xla``) unless ``JAX_COMPILATION_CACHE_DIR`` is set already: a resume
after preemption, the next distillation stage and every eval or generate job of the same shapes then
load their executables instead of compiling them again (JAX keys entries by the program, the
devices, the compile options and its own version, so a stale entry is never used). Set
``DISTILL_JAX_COMPILATION_CACHE=0`` to compile every time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT_VARIABLE = "DISTILL_JAX_MALLOC_TUNING"
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
_MIN_GLIBC = (2, 35)  # The release that added glibc.malloc.hugetlb.
CACHE_DIR_VARIABLE = "JAX_COMPILATION_CACHE_DIR"  # JAX reads it when it is imported
CACHE_OPT_OUT_VARIABLE = "DISTILL_JAX_COMPILATION_CACHE"


def _glibc_version() -> tuple[int, ...] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None  # Not glibc (musl, macOS, Windows): there are no tunables to set.
    if name != "glibc":
        return None
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _transparent_huge_pages_usable() -> bool:
    try:
        with open(_THP_MODE_FILE) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def tuned_environment(
    environ: Mapping[str, str], glibc: tuple[int, ...] | None, huge_pages_usable: bool
) -> dict[str, str] | None:
    """The environment to re-exec with, or None when this one is already right or cannot be improved."""
    if environ.get(OPT_OUT_VARIABLE, "1") == "0" or glibc is None or glibc < _MIN_GLIBC or not huge_pages_usable:
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return None  # Set already: by this function before the exec, or by the user on purpose.
    return {**environ, "GLIBC_TUNABLES": f"{current}:{HUGETLB_TUNABLE}" if current else HUGETLB_TUNABLE}


def reexec_with_malloc_tuning(argv: Sequence[str]) -> None:
    """Replaces this process by ``sys.executable argv...`` with the tunable set; returns when nothing needs doing.

    Call it before anything slow: the first start's imports are thrown away by the exec.
    """
    env = tuned_environment(os.environ, _glibc_version(), _transparent_huge_pages_usable())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)


def cli_reexec_argv(
    args: Sequence[str],
    *,
    main_spec_name: str | None,
    argv0: str,
    safe_path: bool,
    module: str = "distill_jax.cli.main",
) -> list[str]:
    """The interpreter arguments that start the CLI again *the way it was started*.

    ``python -m`` puts the current directory first on ``sys.path``: re-executing a console-script start
    (``distill-jax ...``, whose ``sys.path[0]`` is the script's bin directory) that way made a checkout in
    the working directory shadow the installed package. So a console script runs its entry script again
    (same ``sys.path`` as the first start), and only a start that was ``python -m`` itself stays one,
    keeping ``-P`` (Python 3.11's safe path) if it was given. Anything else runs ``-P -m``: never the CWD.
    """
    if main_spec_name == module:
        return [*(["-P"] if safe_path else []), "-m", module, *args]
    if argv0 and os.path.isfile(argv0):
        return [argv0, *args]
    return ["-P", "-m", module, *args]


def compilation_cache_dir(environ: Mapping[str, str]) -> str | None:
    """Where JAX should cache compiled programs, or None when the environment already decides."""
    if environ.get(CACHE_OPT_OUT_VARIABLE, "1") == "0" or environ.get(CACHE_DIR_VARIABLE):
        return None
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "distill_jax", "xla")


def enable_compilation_cache() -> None:
    """Sets ``JAX_COMPILATION_CACHE_DIR`` for this process and its children; call before importing jax."""
    directory = compilation_cache_dir(os.environ)
    if directory is not None:
        os.environ[CACHE_DIR_VARIABLE] = directory
