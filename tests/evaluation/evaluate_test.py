"""Scoring (issue 18): non-finite predictions are counted, never crash the evaluation, and
results.json is still written; the results name the subjects scored."""

import json
import types

import numpy as np

from rpsm_jax import joints
from rpsm_jax.evaluation import evaluate
from rpsm_jax.training import metric_writers

N, T, P = 4, 3, 17


def _inputs(pred_fn):
  rng = np.random.default_rng(0)
  gt = rng.normal(size=(N, T, P, 3)) * 100
  pred = pred_fn(np.stack([gt + 5.0, gt + 1.0]))
  records = np.arange(N * T).reshape(N, T)
  index = types.SimpleNamespace(
      action=np.repeat([0, 1], N * T // 2), action_names=("Walking", "Eating"),
      subject=np.repeat([0, 1], N * T // 2), subject_names=("S9", "S11"))
  norm = types.SimpleNamespace(mean_pose=np.zeros((P, 3)))
  mask = np.ones((N, T), bool)
  mask[-1, -1] = False                              # padding is never counted
  return {"pred": pred, "gt": gt, "mask": mask, "record": records}, index, norm


def test_nonfinite_predictions_are_counted_and_left_out(tmp_path):
  def poison(pred):
    pred[0] = np.nan                                # stage 1 diverged everywhere
    pred[1, 0, 0, 3, 1] = np.inf                    # stage 2: one frame
    pred[1, -1, -1] = np.nan                        # ... and a padded one
    return pred
  out, index, norm = _inputs(poison)
  results = evaluate.score(out, index, norm, root_joint=0)
  assert results["nonfinite_frames"] == {"stage_1": N * T - 1, "stage_2": 1}
  assert "p_mpjpe_mm stage_1" in results["not_computed"]
  assert "mpjpe_mm stage_1" in results["not_computed"]
  assert not any("stage_2" in m for m in results["not_computed"])
  assert results["mpjpe_mm"]["stage_1"] is None
  assert np.isfinite(results["p_mpjpe_mm"]["stage_2"])
  # Finite frames are off by a constant, which root alignment removes: the inf frame is
  # left out, not averaged in.
  assert results["framewise"]["mpjpe_mm"]["stage_2"] < 1e-6
  evaluate.write_results(results, str(tmp_path))
  written = json.load(open(tmp_path / "results.json"))
  assert written["nonfinite_frames"]["stage_1"] == N * T - 1
  assert "Non-finite predictions" in open(tmp_path / "results.md").read()
  # A metric that could not be computed is logged, not a crash.
  writer = metric_writers.MetricWriter(str(tmp_path / "logs"))
  writer.write_scalars(1, {"eval/p_mpjpe_mm": results["p_mpjpe_mm"]["stage_1"]})
  writer.close()


def test_results_name_the_subjects_scored():
  out, index, norm = _inputs(lambda p: p)
  results = evaluate.score(out, index, norm, root_joint=0)
  assert results["subjects"] == ["S9", "S11"]
  assert results["nonfinite_frames"] == {"stage_1": 0, "stage_2": 0}
  assert results["not_computed"] == []
  assert "subject(s) S9, S11" in evaluate.markdown_table(results)


def test_mpjpe_by_clip_position_averages_the_frames_at_each_position(tmp_path):
  offsets = np.array([1.0, 2.0, 4.0])               # mm, per clip position, along x

  def shift(pred):
    pred = pred.copy()
    pred[1, :, :, 1:, 0] += offsets[:, None]        # stage 2, every joint but the root
    return pred
  out, index, norm = _inputs(shift)
  results = evaluate.score(out, index, norm, root_joint=0)
  # Root alignment keeps each non-root joint off by the offset: MPJPE = offset x 16 / 17.
  expected = offsets * (P - 1) / P
  np.testing.assert_allclose(results["mpjpe_mm_by_clip_position"]["stage_2"], expected)
  np.testing.assert_allclose(results["mpjpe_mm_by_clip_position"]["stage_1"], 0, atol=1e-9)
  # The padded frame (last clip, last position) is left out of position 3's average only.
  assert results["frames"] == N * T - 1
  # Each clip's error is constant per position but differs between positions: the split
  # gives the mean offset to the clip-constant part and the rest to the frame-to-frame.
  split = results["clip_error_split_mm"]["stage_2"]
  assert split["clips"] == N - 1                    # the clip with padding is left out
  np.testing.assert_allclose(split["clip_constant"], offsets.mean() * (P - 1) / P)
  np.testing.assert_allclose(split["frame_to_frame"],
                             np.abs(offsets - offsets.mean()).mean() * (P - 1) / P)
  evaluate.write_results(results, str(tmp_path))
  text = open(tmp_path / "results.md").read()
  assert "by position in the clip" in text and "clip-constant" in text


def test_bone_length_split_per_stage(tmp_path):
  def scale(pred):
    pred = pred.copy()
    pred[1] = pred[1] * 1.2                       # stage 2: the same pose, 20% larger
    return pred
  out, index, norm = _inputs(scale)
  results = evaluate.score(out, index, norm, root_joint=0)
  bones = results["bone_length_split_mm"]
  # Stage 1 is the truth shifted: nothing wrong. Stage 2's bones are all 20% long, and its
  # directions right.
  assert bones["stage_1"]["bone_length_error"] < 1e-9
  gt = out["gt"].reshape(-1, P, 3)[out["mask"].reshape(-1)]
  lengths = np.linalg.norm(gt[:, 1:] - gt[:, list(joints.H36M_PARENTS[1:])], axis=-1)
  np.testing.assert_allclose(bones["stage_2"]["bone_length_error"], 0.2 * lengths.mean())
  assert bones["stage_2"]["mpjpe_true_lengths"] < 1e-6
  assert results["framewise"]["mpjpe_mm"]["stage_2"] > 10
  evaluate.write_results(results, str(tmp_path))
  assert "MPJPE with true bone lengths" in open(tmp_path / "results.md").read()
