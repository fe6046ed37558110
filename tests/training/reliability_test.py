"""Preemption, crashes, NaNs, bad data and bad configs lose nothing (issue: reliability)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rpsm_jax.training import checkpoints
from rpsm_jax.training import config_checks
from rpsm_jax.pipeline import input_pipeline as ip
from rpsm_jax.tools import kill_resume
from rpsm_jax.training import recipe
from rpsm_jax.training import train

# Whole trainings in subprocesses: the first CI Python runs them, the second skips them.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Enough steps after the first checkpoint that a SIGTERM sent once it appears lands
# during training, however fast the steps run.
_STEPS = 40


def _main_command(workdir, data_dir, *extra):
  # Two separate runs end bitwise equal only with the same convolutions: "auto" may choose
  # differently in each while pytest's other workers load the cores (a restart of one run
  # keeps its own choices), so these runs fix them.
  return [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          f"--config.num_train_steps={_STEPS}", "--config.checkpoint_every_steps=4",
          "--config.eval_every_steps=100", "--config.model.conv_algorithm=direct", *extra]


@pytest.fixture(scope="module")
def reference_run(tiny_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference"))
  subprocess.run(_main_command(workdir, tiny_data_dir), cwd=ROOT, check=True,
                 capture_output=True, timeout=900)
  return workdir


def _latest_steps(workdir):
  path = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(
      path) else []


def test_sigterm_saves_then_resume_matches_uninterrupted(tiny_data_dir, reference_run,
                                                         tmp_path):
  workdir = str(tmp_path / "preempted")
  proc = subprocess.Popen(_main_command(workdir, tiny_data_dir), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  # Wait until training is under way (the first checkpoint exists), then preempt.
  deadline = time.time() + 600
  while not _latest_steps(workdir) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, output[-3000:]
  saved = _latest_steps(workdir)
  assert saved and saved[-1] < _STEPS, (saved, output[-2000:])
  assert "Received SIGTERM" in output
  assert not os.path.exists(os.path.join(workdir, "eval", "results.json"))
  subprocess.run(_main_command(workdir, tiny_data_dir), cwd=ROOT, check=True,
                 capture_output=True, timeout=900)
  assert _latest_steps(workdir)[-1] == _STEPS
  assert kill_resume.compare(reference_run, workdir) == 0.0


def test_kill_resume_script(tiny_data_dir, tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.tools.kill_resume", "--config=configs/synthetic_tiny.py",
       f"--workdir={tmp_path}", "--kills=1", "--seed=3", "--",
       f"--config.dataset.data_dir={tiny_data_dir}", "--config.num_train_steps=8",
       "--config.checkpoint_every_steps=2", "--config.eval_every_steps=100",
       "--config.pretrain2d.enabled=False", "--config.model.conv_algorithm=direct"],
      cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stdout + out.stderr[-3000:]
  # The kill landed during training (after a checkpoint, before the last step).
  assert "kills during training: 1 of 1" in out.stdout, out.stdout
  assert "SIGKILL during training, after the checkpoint at step" in out.stdout
  assert "max |reference - interrupted| over parameters and optimiser state: 0.0" in out.stdout


def test_crash_at_the_final_save_is_not_a_finished_run(tiny_config, tmp_path, monkeypatch):
  """results.json marks a run finished (a rerun skips it): it must not exist before the
  final checkpoint does, or a kill there would leave a 'finished' run without it."""
  tiny_config.eval_every_steps = 100
  workdir = str(tmp_path / "final")
  total = tiny_config.num_train_steps
  original = checkpoints.Checkpoints.save

  def save(self, step, *args, **kwargs):
    if step == total:
      raise KeyboardInterrupt("killed while saving the final checkpoint")
    return original(self, step, *args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(checkpoints.Checkpoints, "save", save)
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(tiny_config, workdir)
  assert total not in _latest_steps(workdir)
  assert recipe.finished_training(tiny_config, workdir) is None
  train.train_and_evaluate(tiny_config, workdir)   # resumes, ends with the final checkpoint
  assert _latest_steps(workdir)[-1] == total
  assert recipe.finished_training(tiny_config, workdir)["step"] == total


def _poison(step_to_poison):
  """Patches ClipLoader.batch so one training step's targets hold a NaN."""
  original = ip.ClipLoader.batch

  def batch(self, step, *args, **kwargs):
    out = original(self, step, *args, **kwargs)
    if self.shuffle and step == step_to_poison:
      out["pose_3d"][0, 0, 0, 0] = np.nan
    return out
  return batch


def test_nan_stops_naming_the_step_and_keeps_good_checkpoints(tiny_config, tmp_path,
                                                              monkeypatch):
  monkeypatch.setattr(ip.ClipLoader, "batch", _poison(2))   # the 3rd step
  tiny_config.eval_every_steps = 100
  tiny_config.log_every_steps = 4
  workdir = str(tmp_path / "nan")
  with pytest.raises(train.NonFiniteError, match="at step 3"):
    train.train_and_evaluate(tiny_config, workdir)
  # The checkpoint at step 2 was written; nothing after the bad step was.
  assert _latest_steps(workdir) == [2]


def test_nan_skip_policy_skips_and_counts(tiny_config, tmp_path, monkeypatch):
  monkeypatch.setattr(ip.ClipLoader, "batch", _poison(2))
  tiny_config.nonfinite_policy = "skip"
  tiny_config.eval_every_steps = 100
  workdir = str(tmp_path / "skip")
  results = train.train_and_evaluate(tiny_config, workdir)
  assert np.isfinite(results["mpjpe_mm"]["stage_3"])
  logged = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  counts = [l["nonfinite_steps"] for l in logged if "nonfinite_steps" in l]
  assert counts[-1] == 1


def test_damaged_record_is_named(tiny_config, tmp_path):
  pipe = ip.create_pipeline(tiny_config, str(tmp_path))

  class Broken:
    def __getitem__(self, i):
      raise OSError("bad JPEG data")

    def __len__(self):
      return len(pipe.train.index.sequence)

  pipe.train.source = Broken()
  with pytest.raises(RuntimeError, match=r"synthetic_clips/tiny.*train, record \d+ "
                                         r"\(sequence '.*', frame \d+\): bad JPEG"):
    pipe.train.batch(0)


def test_bad_config_combinations_named_before_compiling(tiny_config):
  tiny_config.batch_size = 3
  with pytest.raises(ValueError, match="batch_size=3 does not split over 2 devices"):
    config_checks.check(tiny_config, num_devices=2)
  with pytest.raises(TypeError):
    tiny_config.model.num_stages = "three"        # ml_collections keeps field types


def test_unknown_or_mistyped_override_on_the_command_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
       f"--workdir={tmp_path}", "--config.model.num_stagez=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "num_stages" in out.stderr
  out = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.main", "--config=configs/synthetic_tiny.py",
       f"--workdir={tmp_path}", "--config.model.num_stages=three"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "num_stages" in out.stderr
