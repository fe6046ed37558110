"""Restarts of train_and_evaluate (issue 18): one run per workdir, no silent resume with a
changed model/data/seed, run files named, a damaged newest checkpoint skipped."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from rpsm_jax import workdir as workdir_lib
from rpsm_jax.tools import kill_resume
from rpsm_jax.training import checkpoints
from rpsm_jax.training import run_lock
from rpsm_jax.training import train

# Whole trainings in subprocesses: the first CI Python runs them, the second skips them.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_HOLD = ("import sys, time\n"
         "from rpsm_jax.training import run_lock\n"
         "lock = run_lock.acquire(sys.argv[1])\n"
         "print('locked', flush=True)\n"
         "time.sleep(float(sys.argv[2]))\n")


@pytest.fixture
def config(tiny_config):
  tiny_config.pretrain2d.enabled = False
  tiny_config.model.conv_algorithm = "direct"
  return tiny_config


def _hold_lock(workdir, seconds):
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, workdir, str(seconds)], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_run_on_a_busy_workdir_stops_at_once(config, tmp_path):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  holder = _hold_lock(workdir, 600)
  try:
    with pytest.raises(run_lock.WorkdirBusyError,
                       match=rf"in use by another run \(pid {holder.pid} on host"):
      train.train_and_evaluate(config, workdir)
    assert not os.path.exists(os.path.join(workdir, workdir_lib.NORMALIZATION))
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_dead_run_is_taken_over(tmp_path, caplog):
  workdir = str(tmp_path)
  holder = _hold_lock(workdir, 0)
  holder.wait()                                    # it died holding the lock
  with caplog.at_level(logging.INFO):
    lock = run_lock.acquire(workdir)
  assert f"from pid {holder.pid}" in caplog.text
  assert json.load(open(os.path.join(workdir, run_lock.LOCK)))["pid"] == os.getpid()
  lock.release()


def _previous_run(config, workdir):
  """A workdir as a run leaves it: config.json and a checkpoint folder."""
  os.makedirs(os.path.join(workdir, workdir_lib.CHECKPOINTS, "4"))
  workdir_lib.save_config(config, workdir)


@pytest.mark.parametrize("field,value,named", [
    ("model.width", 0.125, "model.width: 0.0625 -> 0.125"),
    ("model.lstm_units", 16, "model.lstm_units: 32 -> 16"),
    ("clip_length", 5, "clip_length: 4 -> 5"),
    ("model.input_size", 32, "model.input_size: 64 -> 32"),
    ("seed", 7, "seed: 0 -> 7"),
    ("dataset.builder_config", "small", "dataset.builder_config: 'tiny' -> 'small'")])
def test_resume_with_changed_model_data_or_seed_stops(config, tmp_path, field, value, named):
  workdir = str(tmp_path)
  _previous_run(config, workdir)
  changed = config.copy_and_resolve_references()
  parent, _, leaf = field.rpartition(".")
  setattr(changed.get(parent) if parent else changed, leaf, value)
  with pytest.raises(workdir_lib.ConfigChangeError, match=named.replace("(", r"\(")):
    train.train_and_evaluate(changed, workdir)
  # The explicit flag lets it through (checked without training here).
  workdir_lib.check_resume_config(changed, workdir, allow=True)


def test_resume_may_change_paths_and_implementation(config, tmp_path):
  _previous_run(config, str(tmp_path))
  changed = config.copy_and_resolve_references()
  changed.dataset.data_dir = "/elsewhere"
  changed.dataset.num_workers = 7
  changed.model.conv_algorithm = "winograd"
  changed.num_train_steps = 100
  assert workdir_lib.config_changes(config, changed) == []


def test_garbage_normalization_json_names_the_file(config, tmp_path):
  workdir = str(tmp_path)
  with open(os.path.join(workdir, workdir_lib.NORMALIZATION), "w") as f:
    f.write("\x00garbage{")
  with pytest.raises(workdir_lib.RunFileError,
                     match=r"normalization.json is not valid JSON.*delete it"):
    train.train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory):
  """A 6-step tiny run: checkpoints at 2, 4 (evaluated: the best) and 6."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  subprocess.run(
      [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
       f"--workdir={workdir}", f"--config.dataset.data_dir={tiny_data_dir}",
       "--config.pretrain2d.enabled=False", "--config.model.conv_algorithm=direct"],
      cwd=ROOT, check=True, capture_output=True, timeout=1800)
  return workdir


def test_bit_flipped_newest_checkpoint_is_skipped_and_the_run_ends_alike(
    config, finished_run, tmp_path, caplog):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run, workdir)
  step_dir = os.path.join(workdir, workdir_lib.CHECKPOINTS, "6")
  data = max((os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
              if os.sep + "d" + os.sep in os.path.join(d, f)), key=os.path.getsize)
  with open(data, "r+b") as f:
    f.seek(os.path.getsize(data) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, workdir)
  assert "Skipping the checkpoint at step 6" in caplog.text
  assert "Resuming from step 4" in caplog.text
  assert os.listdir(os.path.join(workdir, checkpoints.DAMAGED))
  # Steps 5 and 6 trained again from step 4: the same final state as the uninterrupted run.
  assert kill_resume.compare(finished_run, workdir) == 0.0
