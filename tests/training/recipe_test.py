"""The recipe: 2D pretraining on the dataset's own joints, then 3D from that trunk."""

import json
import os

import pytest

import numpy as np

from rpsm_jax import workdir as workdir_lib
from rpsm_jax.training import recipe

# Several whole trainings: the first CI Python runs them, the second skips them (slow).
pytestmark = pytest.mark.slow


def test_both_phases_then_skipped_when_finished(tiny_config, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  assert tiny_config.pretrain2d.enabled
  results = recipe.run(tiny_config, workdir)
  pre = json.load(open(os.path.join(workdir, "pretrain2d", recipe.PRETRAIN_RESULTS)))
  assert pre["step"] == tiny_config.pretrain2d.num_train_steps
  assert pre["num_joints"] == tiny_config.model.num_joints
  assert np.isfinite(pre["val_heatmap_loss"])
  assert results["step"] == tiny_config.num_train_steps
  saved = workdir_lib.load_config(workdir)
  assert saved.model.trunk_init == "checkpoint:" + os.path.join(workdir, "pretrain2d")
  assert saved.model.freeze_trunk == (tiny_config.pretrain2d.trunk == "frozen")

  # A rerun finds both phases finished and trains nothing.
  from rpsm_jax.training import pretrain2d  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import train  # pylint: disable=g-import-not-at-top

  def fail(*_):
    raise AssertionError("a finished phase ran again")

  monkeypatch.setattr(pretrain2d, "pretrain", fail)
  monkeypatch.setattr(train, "train_and_evaluate", fail)
  assert recipe.run(tiny_config, workdir)["step"] == results["step"]


def test_phase2_config(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  cfg = recipe.phase2_config(tiny_config, workdir)
  assert cfg.model.trunk_init == "checkpoint:" + os.path.join(workdir, "pretrain2d")
  tiny_config.pretrain2d.trunk = "finetune"
  tiny_config.pretrain2d.workdir = str(tmp_path / "shared")
  cfg = recipe.phase2_config(tiny_config, workdir)
  assert cfg.model.trunk_init == "checkpoint:" + str(tmp_path / "shared")
  assert not cfg.model.freeze_trunk
  tiny_config.pretrain2d.enabled = False
  assert recipe.phase2_config(tiny_config, workdir).model.trunk_init == ""
  # A trunk given by hand wins over phase 1.
  tiny_config.pretrain2d.enabled = True
  tiny_config.model.trunk_init = "checkpoint:/elsewhere"
  assert not recipe.uses_pretraining(tiny_config)
  assert recipe.phase2_config(tiny_config, workdir).model.trunk_init == "checkpoint:/elsewhere"
