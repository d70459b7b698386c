"""The allocator re-exec: which environments it changes, and that a real exec carries the tunable."""

import os
import subprocess
import sys

from distill_jax import process_env
from distill_jax.process_env import HUGETLB_TUNABLE, OPT_OUT_VARIABLE, tuned_environment

GLIBC = (2, 36)


def test_adds_the_tunable_once():
    env = tuned_environment({"PATH": "/bin"}, GLIBC, huge_pages_usable=True)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": HUGETLB_TUNABLE}
    assert tuned_environment(env, GLIBC, huge_pages_usable=True) is None  # After the exec: no second one.


def test_keeps_other_tunables_and_the_users_own_choice():
    env = tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, huge_pages_usable=True)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGETLB_TUNABLE}"
    assert tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, huge_pages_usable=True) is None


def test_leaves_alone_what_it_cannot_improve():
    assert tuned_environment({OPT_OUT_VARIABLE: "0"}, GLIBC, huge_pages_usable=True) is None
    assert tuned_environment({}, None, huge_pages_usable=True) is None  # Not glibc.
    assert tuned_environment({}, (2, 31), huge_pages_usable=True) is None  # Before the tunable existed.
    assert tuned_environment({}, GLIBC, huge_pages_usable=False) is None  # THP "never": nothing to advise.


def test_real_exec_carries_the_tunable(tmp_path):
    """A process that calls the re-exec runs again with the tunable, and exactly once more."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\nfrom distill_jax.process_env import reexec_with_malloc_tuning\n"
        "print('start', flush=True)\nreexec_with_malloc_tuning(sys.argv)\nprint(os.environ.get('GLIBC_TUNABLES', ''))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT_VARIABLE)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stdout
    if tuned_environment(env, process_env._glibc_version(), process_env._transparent_huge_pages_usable()) is None:
        assert out.split() == ["start"]  # This machine cannot use it (not glibc, or THP off): no exec.
    else:
        assert out.split() == ["start", "start", HUGETLB_TUNABLE]


def test_cli_entry_point_still_runs_its_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "distill_jax.cli.main", "prepare", "--helpfull"], capture_output=True, text=True
    )
    assert "--config" in out.stdout and "Traceback" not in out.stderr, out.stderr  # absl's help exits 1.


def test_compilation_cache_defaults_under_the_users_cache_and_respects_choices(tmp_path):
    from distill_jax.process_env import CACHE_DIR_VARIABLE, CACHE_OPT_OUT_VARIABLE, compilation_cache_dir

    assert compilation_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "distill_jax" / "xla")
    assert compilation_cache_dir({CACHE_DIR_VARIABLE: "/elsewhere"}) is None  # JAX reads the user's own choice
    assert compilation_cache_dir({CACHE_OPT_OUT_VARIABLE: "0"}) is None


def test_the_cli_entry_point_sets_the_cache_for_jax(tmp_path):
    """A real `distill-jax` start points JAX (imported afterwards, in that process) at the default cache."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "DISTILL_JAX_COMPILATION_CACHE")
    }
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env[OPT_OUT_VARIABLE] = "0"  # no re-exec: the probe's own lines must run after main() returns
    probe = (
        "import sys\n"
        "from distill_jax.cli import main\n"
        "sys.argv = ['distill-jax', '--help']\n"
        "try:\n    main.main()\nexcept SystemExit:\n    pass\n"
        "import jax\n"
        "print(jax.config.jax_compilation_cache_dir)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == str(tmp_path / "cache" / "distill_jax" / "xla")


def test_reexec_argv_starts_the_cli_the_way_it_was_started(tmp_path):
    from distill_jax.process_env import cli_reexec_argv

    script = tmp_path / "distill-jax"
    script.write_text("#!/usr/bin/env python\n")
    m = "distill_jax.cli.main"
    assert cli_reexec_argv(["train"], main_spec_name=None, argv0=str(script), safe_path=False) == [str(script), "train"]
    assert cli_reexec_argv(["train"], main_spec_name=m, argv0="x", safe_path=False) == ["-m", m, "train"]
    assert cli_reexec_argv(["train"], main_spec_name=m, argv0="x", safe_path=True) == ["-P", "-m", m, "train"]
    assert cli_reexec_argv(["train"], main_spec_name=None, argv0="", safe_path=False) == ["-P", "-m", m, "train"]


def test_the_console_script_never_imports_a_checkout_in_the_working_directory(tmp_path):
    """Before: the re-exec ran `python -m distill_jax.cli.main`, which put the CWD first on sys.path."""
    entry = os.path.join(os.path.dirname(sys.executable), "distill-jax")
    if not os.path.isfile(entry):
        import pytest

        pytest.skip("the distill-jax console script is not installed beside this interpreter")
    fake = tmp_path / "distill_jax"
    (fake / "cli").mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('SHADOWED: imported the working directory copy')\n")
    (fake / "cli" / "__init__.py").write_text("")
    (fake / "cli" / "main.py").write_text("raise SystemExit('SHADOWED')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT_VARIABLE, "PYTHONSAFEPATH")}
    out = subprocess.run([entry, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "SHADOWED" not in out.stdout + out.stderr
    assert out.returncode == 0 and "usage: distill-jax SUBCOMMAND" in out.stdout
    # And the re-exec did happen on this machine (else this test would prove nothing).
    if tuned_environment(env, process_env._glibc_version(), process_env._transparent_huge_pages_usable()) is None:
        import pytest

        pytest.skip("no re-exec on this machine (not glibc >= 2.35 or THP off)")
