"""Several processes through jax.distributed on localhost: the global-array and pmapped
train steps, checkpoints across process counts, preemption, and evaluation.

Every run trains the tiny config for 8 steps (checkpoints every 2, evaluations at 4 and 8)
and is compared with one process on one device: parameters and Adam's moments to 1e-4
(float32 summation order; see _assert_same_state), and the evaluation's numbers.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rpsm_jax import workdir as workdir_lib
from rpsm_jax.tools import launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 600


def _command(workdir, data_dir, *overrides):
  return [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          "--config.pretrain2d.enabled=False", "--config.model.conv_algorithm=direct",
          "--config.num_train_steps=8", "--allocator=system", *overrides]


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for the module's runs: most compile the same programs."""
  path = str(tmp_path_factory.mktemp("xla_cache"))
  os.environ["RPSM_TEST_XLA_CACHE"] = path
  yield path
  os.environ.pop("RPSM_TEST_XLA_CACHE", None)


def _start(command, num_processes, cpu_devices):
  """The processes of one run, without waiting (env as rpsm_jax.launch sets it)."""
  base = dict(os.environ, JAX_PLATFORMS="cpu",
              JAX_COMPILATION_CACHE_DIR=os.environ["RPSM_TEST_XLA_CACHE"])
  if num_processes == 1:
    env = dict(base, JAX_NUM_CPU_DEVICES=str(cpu_devices))
    return [subprocess.Popen(command, cwd=ROOT, env=env)]
  address = f"127.0.0.1:{launch.free_port()}"
  return [subprocess.Popen(command, cwd=ROOT, env=launch.child_env(
      i, num_processes, address, cpu_devices, base)) for i in range(num_processes)]


def _wait(procs):
  try:
    return [p.wait(TIMEOUT_S) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _run(command, num_processes=1, cpu_devices=1):
  codes = _wait(_start(command, num_processes, cpu_devices))
  assert codes == [0] * num_processes, codes


def _saved(workdir, step):
  """The raw saved train state at `step`: {params, opt_state, step} as numpy trees."""
  return workdir_lib.restore_numpy(os.path.join(workdir, workdir_lib.CHECKPOINTS, str(step)))


def _assert_same_state(a, b):
  """Equal up to float32 summation order, per leaf.

  Other device counts sum each gradient in another order; after 8 steps that moved an Adam
  moment by 2.1e-5 of its value (2-core AVX-512 Xeon; an earlier case on an AVX2 EPYC:
  1.2e-5). What the tests guard against (a wrong batch split, mean or process order) feeds
  the steps other examples, which moves the moments by the order of their own size.
  """
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (path, x), (_, y) in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6 + 1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


def _results(workdir):
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, workdir_lib.EVAL, "results.json")) as f:
    return json.load(f)


def _assert_same_results(a, b):
  for key in ("mpjpe_mm", "p_mpjpe_mm"):
    for stage, value in a[key].items():
      np.testing.assert_allclose(b[key][stage], value, rtol=1e-4, err_msg=f"{key} {stage}")
  assert a["baseline_mean_pose_mpjpe_mm"] == pytest.approx(b["baseline_mean_pose_mpjpe_mm"])


@pytest.fixture(scope="module")
def reference(tiny_data_dir, tmp_path_factory):
  """One process, one device, uninterrupted."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  _run(_command(workdir, tiny_data_dir))
  return workdir


@pytest.mark.parametrize("parallelism,cpu_devices", [
    pytest.param("global", 1, marks=pytest.mark.slow),
    pytest.param("pmap", 1, marks=pytest.mark.slow),
    ("global", 2),
    pytest.param("pmap", 2, marks=pytest.mark.slow)])
def test_two_processes_train_like_one(reference, tiny_data_dir, tmp_path, parallelism,
                                      cpu_devices):
  workdir = str(tmp_path / "run")
  _run(_command(workdir, tiny_data_dir, f"--config.parallelism={parallelism}"),
       num_processes=2, cpu_devices=cpu_devices)
  for step in (4, 8):   # the reference keeps the last 3 (4, 6, 8)
    _assert_same_state(_saved(reference, step), _saved(workdir, step))
  _assert_same_results(_results(reference), _results(workdir))
  assert os.path.exists(os.path.join(workdir, workdir_lib.EVAL, "results.md"))


@pytest.mark.slow
def test_two_processes_train_like_one_from_a_trunk_cache(tiny_data_dir, tmp_path):
  # Each process builds the whole cache and looks up its own rows of every batch.
  flags = ("--config.model.freeze_trunk=True", "--config.trunk_cache_copies=2")
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _run(_command(one, tiny_data_dir, *flags))
  _run(_command(two, tiny_data_dir, *flags), num_processes=2)
  for step in (4, 8):
    _assert_same_state(_saved(one, step), _saved(two, step))
  _assert_same_results(_results(one), _results(two))


def _start_and_stop(command, num_processes, ready, stop):
  """Starts a run and, once ready() is true, calls stop(procs); returns exit codes."""
  procs = _start(command, num_processes, 1)
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while not ready() and time.monotonic() < deadline:
      if any(p.poll() is not None for p in procs):
        break
      time.sleep(0.1)
    assert ready(), "the run ended or timed out before it was to be stopped"
    stop(procs)
    return _wait(procs)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_killed_two_process_run_resumes_on_one_and_on_two(reference, tiny_data_dir,
                                                          tmp_path):
  killed = str(tmp_path / "killed")
  codes = _start_and_stop(
      _command(killed, tiny_data_dir), 2,
      lambda: os.path.isdir(os.path.join(killed, workdir_lib.CHECKPOINTS, "2")),
      lambda procs: [p.send_signal(signal.SIGKILL) for p in procs])
  assert all(c == -signal.SIGKILL or c == 0 for c in codes), codes
  copy = str(tmp_path / "copy")
  shutil.copytree(killed, copy)
  _run(_command(killed, tiny_data_dir), num_processes=1)
  _run(_command(copy, tiny_data_dir), num_processes=2)
  for workdir in (killed, copy):
    _assert_same_state(_saved(reference, 8), _saved(workdir, 8))
    _assert_same_results(_results(reference), _results(workdir))


@pytest.mark.slow
def test_sigterm_on_one_host_stops_both_at_one_step(reference, tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "preempted")
  command = _command(workdir, tiny_data_dir)
  checkpoints = os.path.join(workdir, workdir_lib.CHECKPOINTS)
  # SIGTERM to process 1 alone as its first checkpoint (step 2) starts being written.
  codes = _start_and_stop(command, 2, lambda: bool(os.path.isdir(checkpoints)
                                                   and os.listdir(checkpoints)),
                          lambda procs: procs[1].send_signal(signal.SIGTERM))
  assert codes == [0, 0], codes
  steps = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())
  assert 2 < steps[-1] < 8, steps    # both stopped early, at one step, and saved it once
  _run(command, num_processes=2)
  _assert_same_state(_saved(reference, 8), _saved(workdir, 8))
