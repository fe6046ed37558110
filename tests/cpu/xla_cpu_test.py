"""CPU allocator choice (rpsm_jax.cpu.xla_cpu.use_allocator) and its command-line flag."""

import os
import subprocess
import sys

import pytest

from rpsm_jax.cpu import xla_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bad_choice_is_named():
  with pytest.raises(ValueError, match="--allocator"):
    xla_cpu.use_allocator("tcmalloc")


def test_auto_follows_jax_platforms(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert not xla_cpu._cpu_only()  # pylint: disable=protected-access
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert xla_cpu._cpu_only()  # pylint: disable=protected-access


def test_glibc_tunables_keep_the_users_values():
  if xla_cpu.glibc_version() is None or xla_cpu.glibc_version() < (2, 35):
    assert xla_cpu.glibc_tuned_env({}) is None
    return
  env = xla_cpu.glibc_tuned_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:glibc.rtld.x=1",
                                  "OTHER": "kept"})
  tunables = dict(t.split("=") for t in env["GLIBC_TUNABLES"].split(":"))
  assert tunables == {**dict(xla_cpu.GLIBC_TUNABLES), "glibc.malloc.hugetlb": "0",
                      "glibc.rtld.x": "1"}
  assert env["OTHER"] == "kept"


def _main_malloc(allocator: str, **extra_env) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", "RPSM_JAX_REEXECED")}
  env.update(extra_env)
  return subprocess.run(
      [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
       "--mode=summary", f"--allocator={allocator}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _logged_malloc(allocator: str, **extra_env) -> str:
  out = _main_malloc(allocator, **extra_env)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if "malloc: " in l]
  assert len(lines) == 1, out.stderr[-2000:]   # logged once: the restart is not a loop
  assert "total_params" in out.stdout
  return lines[0].rsplit("malloc: ", 1)[1].strip()


@pytest.mark.skipif(xla_cpu.jemalloc_path() is None, reason="libjemalloc2 not installed")
def test_main_restarts_with_jemalloc():
  assert _logged_malloc("jemalloc") == "jemalloc"
  assert _logged_malloc("auto") == "jemalloc"
  assert _logged_malloc("system") == "system"


@pytest.mark.skipif((xla_cpu.glibc_version() or (0, 0)) < (2, 35), reason="needs glibc >= 2.35")
def test_main_restarts_with_glibc_tunables():
  assert _logged_malloc("glibc-tuned") == "glibc-tuned"
  # RPSM_JAX_REEXECED=1 by hand keeps the process's malloc: "auto" says so, an explicit
  # choice that needs the restart is refused with the reason.
  assert _logged_malloc("auto", RPSM_JAX_REEXECED="1") == "system"
  out = _main_malloc("glibc-tuned", RPSM_JAX_REEXECED="1")
  assert out.returncode != 0
  assert "--allocator=glibc-tuned: RPSM_JAX_REEXECED=1 forbids" in out.stderr


def test_auto_uses_glibc_tunables_without_jemalloc(monkeypatch):
  if (xla_cpu.glibc_version() or (0, 0)) < (2, 35):
    pytest.skip("needs glibc >= 2.35")
  monkeypatch.setattr(xla_cpu, "jemalloc_path", lambda: None)
  monkeypatch.setattr(xla_cpu, "jemalloc_loaded", lambda: False)
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.delenv("RPSM_JAX_REEXECED", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  restarts = []
  monkeypatch.setattr(xla_cpu, "_reexec", restarts.append)
  xla_cpu.use_allocator("auto", auto_glibc_tuned=False)   # the config says no
  assert not restarts
  xla_cpu.use_allocator("auto", auto_glibc_tuned=True)
  assert len(restarts) == 1
  assert "glibc.malloc.hugetlb=1" in restarts[0]["GLIBC_TUNABLES"]
  assert "LD_PRELOAD" not in restarts[0] or "jemalloc" not in restarts[0]["LD_PRELOAD"]


@pytest.mark.skipif((xla_cpu.glibc_version() or (0, 0)) < (2, 35), reason="needs glibc >= 2.35")
@pytest.mark.parametrize("program", ["rpsm_jax.benchmark", "rpsm_jax.predict",
                                     "rpsm_jax.streaming"])
def test_command_lines_apply_the_allocator_before_their_own_checks(program):
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", "RPSM_JAX_REEXECED")}
  out = subprocess.run([sys.executable, "-m", program, "--allocator=glibc-tuned"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0   # each then stops: a required flag is missing
  assert "is required" in out.stderr, out.stderr[-2000:]
  assert [l.rsplit("malloc: ", 1)[1].strip() for l in out.stderr.splitlines()
          if "malloc: " in l] == ["glibc-tuned"], out.stderr[-2000:]


def test_release_free_memory_names_the_allocator_it_asked():
  # This process runs glibc's malloc or, preloaded, jemalloc's; either is asked.
  assert xla_cpu.release_free_memory() in (("jemalloc",) if xla_cpu.jemalloc_loaded()
                                           else ("glibc",))
