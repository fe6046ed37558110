"""The ablation command on the tiny config: every variant trains, resumes, is tabulated."""

import json
import os

import pytest

from rpsm_jax.tools import ablations
from rpsm_jax.training import recipe

# Several whole trainings: the first CI Python runs them, the second skips them (slow).
pytestmark = pytest.mark.slow


def test_variant_config_keeps_frames_per_step(tiny_config, tmp_path):
  frames = tiny_config.batch_size * tiny_config.clip_length
  for variant in ablations.VARIANTS:
    config = ablations.variant_config(tiny_config, variant, str(tmp_path))
    # Whole clips: rounded to the nearest batch of them.
    assert abs(config.batch_size * config.clip_length - frames) <= config.clip_length / 2
    assert config.pretrain2d.workdir == str(tmp_path / recipe.PRETRAIN_DIR)
  no_pre = ablations.variant_config(tiny_config, ablations.BY_NAME["no_pretrain"], "w")
  assert not recipe.uses_pretraining(no_pre)


def test_two_variants_run_resume_and_tabulate(tiny_config, tmp_path, monkeypatch):
  workdir = str(tmp_path / "ablations")
  names = ["stages_1", "no_pretrain"]
  out = ablations.run_ablations(tiny_config, workdir, names)
  assert list(out["variants"]) == names
  for name in names:
    row = out["variants"][name]
    assert len(row["mpjpe_mm"]) == (1 if name == "stages_1" else 3)
    assert row["paper_mm"] == ablations.BY_NAME[name].paper_mm and row["wall_s"] > 0
  assert os.path.exists(os.path.join(workdir, "pretrain2d", recipe.PRETRAIN_RESULTS))
  assert not os.path.exists(os.path.join(workdir, "no_pretrain", recipe.PRETRAIN_DIR))
  saved = json.load(open(os.path.join(workdir, ablations.RESULTS_JSON)))
  assert saved["variants"].keys() == out["variants"].keys()
  table = open(os.path.join(workdir, ablations.RESULTS_MD)).read()
  assert "stages_1" in table and "pretrained < not pretrained" in table
  assert os.path.getsize(os.path.join(workdir, ablations.CHART)) > 0

  # A rerun trains nothing: both variants and the pretraining are finished.
  def fail(*_):
    raise AssertionError("a finished variant trained again")

  monkeypatch.setattr(recipe, "run", fail)
  again = ablations.run_ablations(tiny_config, workdir, names)
  assert again["variants"]["stages_1"]["mpjpe_mm"] == out["variants"]["stages_1"]["mpjpe_mm"]


def test_orderings():
  rows = {"stages_3": {"last_mpjpe_mm": 70.0}, "stages_2": {"last_mpjpe_mm": 75.0},
          "clip1_dense": {"last_mpjpe_mm": 72.0}}
  by = {o["ordering"]: o for o in ablations.check_orderings(rows)}
  assert by["3 stages < 2 stages"]["held"] is True
  assert by["clips of 5 + LSTM >= 5% below clip 1 + dense (3 stages)"]["held"] is False
  assert by["2 stages < 1 stage"]["held"] is None
  assert all(o["paper_held"] for o in by.values())
