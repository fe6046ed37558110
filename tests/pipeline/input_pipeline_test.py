"""Tests of the clip input pipeline on the tiny synthetic dataset."""

import json

import numpy as np
import pytest

from rpsm_jax import joints
from rpsm_jax import poses
from rpsm_jax.pipeline import datasets
from rpsm_jax.pipeline import input_pipeline as ip


@pytest.fixture
def pipeline(tiny_config, tmp_path):
  return ip.create_pipeline(tiny_config, str(tmp_path))


def test_clips_stay_within_sequences(pipeline, tiny_config):
  for loader in (pipeline.train, pipeline.eval):
    seq = loader.index.sequence[loader.clips]                     # (N, C)
    assert np.all(seq == seq[:, :1])
    # Stored frames of a clip are frame_step positions apart within the sequence.
    order = np.lexsort((loader.index.frame_index, loader.index.sequence))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    steps = np.diff(position[loader.clips], axis=1)[loader.clip_mask[:, 1:]]
    assert np.all(steps == tiny_config.frame_step)
    assert np.all(np.diff(loader.index.frame_index[loader.clips], axis=1)
                  [loader.clip_mask[:, 1:]] > 0)


def test_training_clips_start_every_stride(pipeline, tiny_config):
  index = pipeline.train_index
  per_seq = np.bincount(index.sequence)
  expected = sum(max(0, n - tiny_config.clip_length + 1) for n in per_seq)
  assert pipeline.train.num_clips == expected


@pytest.mark.parametrize("clip_length,frame_step", [(4, 1), (3, 2), (5, 3)])
def test_eval_clips_cover_every_frame_once(pipeline, clip_length, frame_step):
  index = pipeline.eval_index
  clips, mask = ip.make_clips(index, clip_length, frame_step, cover_all=True)
  covered = np.sort(clips[mask])
  np.testing.assert_array_equal(covered, np.arange(len(index.sequence)))
  # Padding only at the end of a clip.
  assert np.all(np.diff(mask.astype(int), axis=1) <= 0)


def test_clip_longer_than_every_sequence_is_a_clear_error(pipeline):
  with pytest.raises(ValueError, match="longest has"):
    ip.make_clips(pipeline.train_index, 1000)


def test_normalization_round_trips_and_is_saved(pipeline, tmp_path):
  norm = pipeline.norm
  rel = poses.root_relative(pipeline.train_index.pose_3d, 0)
  x = norm.normalize(rel)
  assert x.min() >= -1e-6 and x.max() <= 1 + 1e-6
  np.testing.assert_allclose(norm.denormalize(x), rel, atol=1e-3)
  saved = json.loads((tmp_path / "normalization.json").read_text())
  np.testing.assert_allclose(saved["minimum"], norm.minimum)
  # Statistics come from the training split only.
  train_rel = poses.root_relative(pipeline.train_index.pose_3d, 0)
  np.testing.assert_allclose(norm.maximum, train_rel.max(0))


def test_saved_statistics_are_reused(tiny_config, tmp_path):
  first = ip.create_pipeline(tiny_config, str(tmp_path)).norm
  path = tmp_path / "normalization.json"
  stats = json.loads(path.read_text())
  stats["maximum"] = (np.asarray(stats["maximum"]) + 5.0).tolist()
  path.write_text(json.dumps(stats))
  second = ip.create_pipeline(tiny_config, str(tmp_path)).norm
  np.testing.assert_allclose(second.maximum, first.maximum + 5.0)


def test_batch_shapes_and_dtypes(pipeline, tiny_config):
  batch = pipeline.train.batch(0)
  b, t, s = tiny_config.batch_size, tiny_config.clip_length, tiny_config.model.input_size
  assert batch["image"].shape == (b, t, s, s, 3) and batch["image"].dtype == np.uint8
  assert batch["pose_3d"].shape == (b, t, 17, 3) and batch["pose_3d"].dtype == np.float32
  assert batch["pose_2d"].shape == (b, t, 17, 2)
  assert batch["mask"].all()
  np.testing.assert_allclose(batch["pose_3d_mm"][..., 0, :], 0.0)
  frames = poses.model_input(batch["image"])
  assert frames.min() >= -0.5 and frames.max() <= 0.5


def test_same_seed_same_batches_and_restart(pipeline, tiny_config, tmp_path):
  again = ip.create_pipeline(tiny_config, str(tmp_path))
  stream = list(pipeline.train.iterate(start_step=0, num_steps=4))
  resumed = list(again.train.iterate(start_step=2, num_steps=4))
  for a, b in zip(stream[2:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  tiny_config.seed = 1
  other = ip.create_pipeline(tiny_config, str(tmp_path / "other"))
  assert not np.array_equal(other.train.batch(0)["image"], stream[0]["image"])


def test_scale_and_crop_moves_joints_with_the_image():
  rng = np.random.default_rng(0)
  size = 64
  joints = rng.uniform(8, 56, (5, 2)).astype(np.float32)
  image = np.zeros((size, size, 3), np.uint8)
  for x, y in joints.astype(int):
    image[y, x] = 255
  centres = joints.astype(int) + 0.5  # pixel centres of the marked pixels
  for scale, shift in ((1.1, (0.0, 1.0)), (0.9, (1.0, 0.3)), (1.0, (0.5, 0.5)),
                       (1.05, (0.7, 0.2))):
    out, moved = ip.scale_and_crop(image, centres, 80, scale, shift)
    assert out.shape == (80, 80, 3)
    for (x, y) in moved:
      if 2 <= x < 78 and 2 <= y < 78:
        patch = out[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3]
        assert patch.max() > 60, (scale, shift, x, y)


def test_augmentation_is_drawn_per_frame(pipeline):
  batch = pipeline.train.batch(3)
  # Bone lengths in pixels change between frames with independent scales, so the 2D
  # skeleton extent ratio between augmented frames differs from 1.
  plain = pipeline.eval.batch(0)
  assert batch["pose_2d"].shape[1] > 1
  extent = np.ptp(batch["pose_2d"], axis=2).max(-1)              # (B, T)
  assert np.std(extent) > 0
  assert plain["image"].dtype == np.uint8


def test_eval_batches_pad_and_mask(pipeline):
  loader = pipeline.eval
  batches = list(loader.iterate())
  assert len(batches) == loader.num_batches
  total_valid = sum(int(b["mask"].sum()) for b in batches)
  assert total_valid == len(loader.index.sequence)
  last = batches[-1]
  assert np.all(last["record"][~last["mask"]] == -1)


def test_joint_count_mismatch_is_a_clear_error(tiny_config, tmp_path):
  tiny_config.model.num_joints = 14
  with pytest.raises(ValueError, match="num_joints=14"):
    ip.create_pipeline(tiny_config, str(tmp_path))


def test_missing_dataset_names_the_build_command(tiny_config, tmp_path):
  tiny_config.dataset.data_dir = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="python -m data.synthetic_clips"):
    datasets.prepare(tiny_config.dataset)


def test_unknown_dataset_lists_known_ones(tiny_config):
  tiny_config.dataset.name = "h36m_clipz"
  with pytest.raises(ValueError, match="known datasets"):
    datasets.prepare(tiny_config.dataset)


def test_host_shards_partition_the_global_batch(pipeline, tiny_config, tmp_path):
  """Batches are a function of (seed, step) alone: the hosts' rows, augmentation included,
  put together are the one-host batch, for training and evaluation."""
  shards = [ip.create_pipeline(tiny_config, str(tmp_path), shard=(i, 2)) for i in range(2)]
  for name in ("train", "eval"):
    whole = getattr(pipeline, name).batch(1)
    parts = [getattr(p, name).batch(1) for p in shards]
    for key, value in whole.items():
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value,
                                    err_msg=f"{name} {key}")


def test_rescale_bones_sets_lengths_and_keeps_directions():
  rng = np.random.default_rng(0)
  parents = joints.H36M_PARENTS
  pose = rng.normal(0, 200, (6, 17, 3)).astype(np.float32)
  lengths = rng.uniform(50, 500, 17).astype(np.float32)
  lengths[0] = 0
  out = poses.rescale_bones(pose, parents, lengths)
  assert out.dtype == pose.dtype
  np.testing.assert_allclose(out[:, 0], pose[:, 0])                  # the root stays
  np.testing.assert_allclose(poses.bone_lengths(out, parents)[:, 1:],
                             np.broadcast_to(lengths[1:], (6, 16)), rtol=1e-4)
  for j in range(1, 17):
    q = parents[j]
    a, b = pose[:, j] - pose[:, q], out[:, j] - out[:, q]
    cos = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
  # Joints listed before their parents (HumanEva's order: the neck, joint 13, is the root).
  he = poses.rescale_bones(pose[:, :14], joints.HUMANEVA_PARENTS, lengths[:14])
  np.testing.assert_allclose(poses.bone_lengths(he, joints.HUMANEVA_PARENTS)[:, :13],
                             np.broadcast_to(lengths[:13], (6, 13)), rtol=1e-4)


def test_rescale_train_bones_changes_training_labels_only(tiny_config, tmp_path):
  plain = ip.create_pipeline(tiny_config, str(tmp_path / "plain"))
  tiny_config.dataset.rescale_train_bones = True
  fitted = ip.create_pipeline(tiny_config, str(tmp_path / "fitted"))
  parents = joints.H36M_PARENTS
  before = poses.bone_lengths(plain.train_index.pose_3d, parents)
  after = poses.bone_lengths(fitted.train_index.pose_3d, parents)
  assert before[:, 1:].std(0).max() > 1.0        # the tiny subjects differ in proportions
  np.testing.assert_allclose(after, np.broadcast_to(before.mean(0), after.shape), rtol=1e-4)
  # Statistics follow the labels the model is trained on; evaluation keeps the true poses.
  np.testing.assert_allclose(fitted.norm.mean_pose, poses.root_relative(
      fitted.train_index.pose_3d, 0).mean(0), atol=1e-3)
  np.testing.assert_array_equal(fitted.eval_index.pose_3d, plain.eval_index.pose_3d)
  np.testing.assert_array_equal(fitted.eval.batch(0)["pose_3d_mm"],
                                plain.eval.batch(0)["pose_3d_mm"])
  assert not np.allclose(fitted.train.batch(0)["pose_3d"], plain.train.batch(0)["pose_3d"])
