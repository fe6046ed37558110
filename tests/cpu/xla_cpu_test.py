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


def _main_malloc(allocator: str) -> str:
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "MALLOC_CONF", "RPSM_JAX_REEXECED")}
  out = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
       "--mode=summary", f"--allocator={allocator}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
  lines = [l for l in out.stderr.splitlines() if "malloc: " in l]
  assert len(lines) == 1, out.stderr[-2000:]   # logged once: the restart is not a loop
  assert "total_params" in out.stdout
  return lines[0].rsplit("malloc: ", 1)[1].strip()


@pytest.mark.skipif(xla_cpu.jemalloc_path() is None, reason="libjemalloc2 not installed")
def test_main_restarts_with_jemalloc():
  assert _main_malloc("jemalloc") == "jemalloc"
  assert _main_malloc("system") == "system"
