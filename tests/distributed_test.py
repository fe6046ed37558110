"""Joining multi-process runs (rpsm_jax.distributed): where settings come from, bad ones."""

import os
import subprocess
import sys
import time

import pytest

from rpsm_jax import distributed
from rpsm_jax.tools import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VARS = ("RPSM_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS", "RPSM_NUM_PROCESSES",
         "JAX_NUM_PROCESSES", "RPSM_PROCESS_ID", "JAX_PROCESS_ID", "RPSM_DISTRIBUTED")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
  for name in _VARS:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def test_single_process_without_settings():
  assert distributed.settings() is None


def test_arguments_then_project_variables_then_jax_variables(clean_env):
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1")
  clean_env.setenv("JAX_NUM_PROCESSES", "4")
  clean_env.setenv("JAX_PROCESS_ID", "3")
  assert distributed.settings() == {"coordinator_address": "10.0.0.1:1",
                                    "num_processes": 4, "process_id": 3}
  clean_env.setenv("RPSM_PROCESS_ID", "2")
  assert distributed.settings()["process_id"] == 2
  assert distributed.settings("h:9", 2, 1) == {"coordinator_address": "h:9",
                                               "num_processes": 2, "process_id": 1}


def test_cluster_detection_on_request(clean_env):
  clean_env.setenv("RPSM_DISTRIBUTED", "1")
  assert distributed.settings() == {}


@pytest.mark.parametrize("env,message", [
    ({"RPSM_COORDINATOR_ADDRESS": "h:1"}, "number of processes"),
    ({"RPSM_COORDINATOR_ADDRESS": "h:1", "RPSM_NUM_PROCESSES": "2",
      "RPSM_PROCESS_ID": "2"}, r"not in \[0, 2\)"),
    ({"RPSM_COORDINATOR_ADDRESS": "nohostport", "RPSM_NUM_PROCESSES": "2",
      "RPSM_PROCESS_ID": "0"}, "host:port"),
    ({"RPSM_NUM_PROCESSES": "two"}, "RPSM_NUM_PROCESSES"),
])
def test_incomplete_or_bad_settings_are_named(clean_env, env, message):
  for k, v in env.items():
    clean_env.setenv(k, v)
  with pytest.raises(distributed.DistributedError, match=message):
    distributed.settings()


def test_unreachable_coordinator_fails_in_bounded_time(tmp_path):
  """Process 1 of 2 whose coordinator never comes: a clear error after the timeout."""
  address = f"127.0.0.1:{launch.free_port()}"   # nothing listens there
  start = time.monotonic()
  out = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
       f"--workdir={tmp_path}", f"--coordinator_address={address}", "--num_processes=2",
       "--process_id=1", "--distributed_timeout=5", "--allocator=system"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  elapsed = time.monotonic() - start
  assert out.returncode != 0
  assert f"could not join the multi-process run at {address} within 5 s" in out.stderr
  assert elapsed < 120, elapsed
