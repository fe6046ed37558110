"""The ablation command on the tiny config: every variant trains, resumes, is tabulated."""

import json
import os

import pytest

from rpsm_jax import workdir as workdir_lib
from rpsm_jax.tools import ablations
from rpsm_jax.training import recipe

# Whole trainings are `slow`: the first CI Python runs them, the second skips them.


def test_variant_config_keeps_frames_per_step(tiny_config, tmp_path):
  frames = tiny_config.batch_size * tiny_config.clip_length
  for variant in ablations.VARIANTS:
    config = ablations.variant_config(tiny_config, variant, str(tmp_path))
    # Whole clips: rounded to the nearest batch of them.
    assert abs(config.batch_size * config.clip_length - frames) <= config.clip_length / 2
    assert config.pretrain2d.workdir == str(tmp_path / recipe.PRETRAIN_DIR)
  no_pre = ablations.variant_config(tiny_config, ablations.BY_NAME["no_pretrain"], "w")
  assert not recipe.uses_pretraining(no_pre)


@pytest.mark.slow
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
  by_position = out["variants"]["stages_1"]["last_mpjpe_mm_by_clip_position"]
  assert len(by_position) == tiny_config.clip_length
  assert " / ".join(f"{x:.1f}" for x in by_position) in table
  assert os.path.getsize(os.path.join(workdir, ablations.CHART)) > 0

  # A rerun trains nothing: both variants and the pretraining are finished.
  def fail(*_):
    raise AssertionError("a finished variant trained again")

  monkeypatch.setattr(recipe, "run", fail)
  again = ablations.run_ablations(tiny_config, workdir, names)
  assert again["variants"]["stages_1"]["mpjpe_mm"] == out["variants"]["stages_1"]["mpjpe_mm"]

  # A second seed trains in a folder of its own, from the same phase 1; seed 0 is reused.
  monkeypatch.undo()
  seeded = ablations.run_ablations(tiny_config, workdir, ["stages_1"], seeds=2)
  row = seeded["variants"]["stages_1"]
  assert row["seeds"] == 2 and len(row["per_seed_last_mpjpe_mm"]) == 2
  assert row["per_seed_last_mpjpe_mm"][0] == out["variants"]["stages_1"]["last_mpjpe_mm"]
  assert row["last_mpjpe_mm"] == pytest.approx(sum(row["per_seed_last_mpjpe_mm"]) / 2)
  assert seeded["base_config"]["seeds"] == [tiny_config.seed, tiny_config.seed + 1]
  seed1 = ablations.variant_dir(workdir, "stages_1", 1)
  assert json.load(open(os.path.join(seed1, "config.json")))["seed"] == tiny_config.seed + 1
  assert not os.path.exists(os.path.join(seed1, recipe.PRETRAIN_DIR))
  assert "last P1 per seed" in open(os.path.join(workdir, ablations.RESULTS_MD)).read()
  # The variant this command did not name is still tabulated, from its finished run.
  assert list(seeded["variants"]) == names
  assert seeded["variants"]["no_pretrain"] == out["variants"]["no_pretrain"]
  # ... unless that run was trained with other settings.
  other = tiny_config.copy_and_resolve_references()
  other.model.lstm_units += 1
  assert ablations.finished_elsewhere(other, workdir) == {}
  with pytest.raises(workdir_lib.ConfigChangeError, match="model.lstm_units"):
    ablations.run_ablations(other, workdir, ["stages_1"])


def test_orderings():
  rows = {"stages_3": {"last_mpjpe_mm": 70.0}, "stages_2": {"last_mpjpe_mm": 75.0},
          "clip1_dense": {"last_mpjpe_mm": 72.0}}
  by = {o["ordering"]: o for o in ablations.check_orderings(rows)}
  assert by["3 stages < 2 stages"]["held"] is True
  assert by["clips of 5 + LSTM >= 5% below clip 1 + dense (3 stages)"]["held"] is False
  assert by["2 stages < 1 stage"]["held"] is None
  ours = [o for o in by.values() if None in o["paper_mm"]]
  assert [o["variants"] for o in ours] == [["stages_1", "clip5_dense_1stage"]]
  assert all(o["paper_held"] for o in by.values() if o not in ours)
  assert ours[0]["paper_held"] is None
  rows.update(stages_1={"last_mpjpe_mm": 80.0}, clip5_dense_1stage={"last_mpjpe_mm": 85.0})
  row = next(o for o in ablations.check_orderings(rows) if o["variants"][1] ==
             "clip5_dense_1stage")
  assert row["held"] is True   # 80 < 0.95 x 85


def _row(last_mm: float) -> dict:
  return {"mpjpe_mm": {"stage_1": last_mm + 2, "stage_2": last_mm},
          "p_mpjpe_mm": {"stage_1": last_mm / 2 + 1, "stage_2": last_mm / 2},
          "last_mpjpe_mm": last_mm, "last_p_mpjpe_mm": last_mm / 2, "wall_s": 10.0,
          "last_mpjpe_mm_by_clip_position": [last_mm + 1, last_mm - 1]}


def test_over_seeds_averages_stages_and_measures_the_spread():
  one = ablations.over_seeds([_row(80.0)])
  assert one["seeds"] == 1 and one["last_mpjpe_mm_sd"] is None and one["wall_s"] == 10.0
  row = ablations.over_seeds([_row(80.0), _row(82.0), _row(84.0)])
  assert row["seeds"] == 3 and row["wall_s"] == 30.0
  assert row["mpjpe_mm"] == {"stage_1": 84.0, "stage_2": 82.0}
  assert row["last_mpjpe_mm"] == 82.0 and row["last_p_mpjpe_mm"] == 41.0
  assert row["last_mpjpe_mm_sd"] == pytest.approx(2.0)   # sample sd (n - 1)
  assert row["last_mpjpe_mm_by_clip_position"] == [83.0, 81.0]
  older = dict(_row(86.0), last_mpjpe_mm_by_clip_position=None)   # results before it
  assert ablations.over_seeds([_row(80.0), older])["last_mpjpe_mm_by_clip_position"] is None


def test_orderings_say_whether_the_seeds_resolve_the_difference():
  def rows(a, b):
    return {"stages_2": ablations.over_seeds([_row(x) for x in a]),
            "stages_1": ablations.over_seeds([_row(x) for x in b])}

  def two_below_one(r):
    return next(o for o in ablations.check_orderings(r) if o["ordering"] == "2 stages < 1 stage")

  clear = two_below_one(rows([80.0, 80.5, 81.0], [85.0, 85.5, 86.0]))
  assert clear["held"] is True and clear["resolved"] is True
  assert clear["se_mm"] == pytest.approx((2 * 0.25 / 3) ** 0.5)
  noisy = two_below_one(rows([80.0, 84.0, 82.0], [81.0, 85.0, 83.5]))
  assert noisy["held"] is True and noisy["resolved"] is False
  # One seed on either side: no spread to judge by.
  assert two_below_one(rows([80.0], [85.0, 86.0]))["resolved"] is None
