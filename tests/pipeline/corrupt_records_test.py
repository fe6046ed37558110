"""Corrupt records (issue 18): stop naming dataset, split, record and file (batches and the
index alike), or skip and count them under config.dataset.corrupt_records="skip"."""

import numpy as np
import pytest

from rpsm_jax.pipeline import datasets
from rpsm_jax.pipeline import input_pipeline as ip


class _Broken:
  """A data source whose records in `bad` raise as a corrupt Riegeli/array_record would."""

  def __init__(self, source, bad):
    self.source, self.bad = source, set(bad)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    if int(i) in self.bad:
      raise RuntimeError("Corrupted Riegeli/records file")
    return self.source[int(i)]

  def __getitems__(self, ids):
    return [self[i] for i in ids]


class _Builder:
  """The tiny builder with a broken data source and the index cache in `cache_dir`."""

  def __init__(self, builder, cache_dir, bad):
    self._builder, self.data_path, self.bad = builder, cache_dir, bad
    self.info = builder.info

  def as_data_source(self, split, **kwargs):
    return _Broken(self._builder.as_data_source(split=split, **kwargs), self.bad)


def _clip_record(loader):
  """A record that batch 0 of `loader` reads."""
  return int(loader.clips[loader._clip_ids(0)[0], 1])


def test_stop_names_dataset_split_record_and_file(tiny_config, tmp_path):
  pipe = ip.create_pipeline(tiny_config, str(tmp_path))
  record = _clip_record(pipe.train)
  pipe.train.source = _Broken(pipe.train.source, [record])
  with pytest.raises(RuntimeError, match=rf"synthetic_clips/tiny.* train, record {record} "
                     r"\(sequence .*\): Corrupted .*\(file .*synthetic_clips.*train.*\).*"
                     r"corrupt_records=skip"):
    pipe.train.batch(0)


def test_skip_replaces_the_frame_and_counts_it(tiny_config, tmp_path):
  tiny_config.dataset.corrupt_records = "skip"
  tiny_config.augment.enabled = False
  pipe = ip.create_pipeline(tiny_config, str(tmp_path))
  want = pipe.train.batch(0)
  record = _clip_record(pipe.train)
  pipe.train.source = _Broken(pipe.train.source, [record])
  got = pipe.train.batch(0)
  assert pipe.train.skipped == {record}
  # Only the unreadable frame changed, to a frame of the same sequence; targets unchanged.
  changed = np.any(got["image"] != want["image"], axis=(2, 3, 4))
  assert changed.sum() >= 1 and changed[0, 1]
  np.testing.assert_array_equal(got["pose_3d"], want["pose_3d"])
  pipe.train.batch(0)
  assert pipe.train.skipped == {record}          # counted once


def test_unknown_policy_is_named(tiny_config, tmp_path):
  tiny_config.dataset.corrupt_records = "ignore"
  with pytest.raises(ValueError, match="config.dataset.corrupt_records"):
    ip.create_pipeline(tiny_config, str(tmp_path))


def test_index_building_stops_naming_the_record_and_file(tiny_config, tmp_path):
  builder = _Builder(datasets.prepare(tiny_config.dataset), str(tmp_path), bad=[7])
  with pytest.raises(RuntimeError, match=r"synthetic_clips/tiny.* split 'train', record 7 "
                     r"\(file .*synthetic_clips.*train.*\): RuntimeError: Corrupted"):
    ip.read_index(builder, "train")


def test_index_building_skips_and_keeps_the_record_out_of_clips(tiny_config, tmp_path):
  builder = _Builder(datasets.prepare(tiny_config.dataset), str(tmp_path), bad=[7])
  index = ip.read_index(builder, "train", corrupt_records="skip")
  good = ip.read_index(_Builder(builder._builder, str(tmp_path / "good"), bad=[]), "train")
  assert len(index.sequence) == len(good.sequence)     # record ids unchanged
  assert np.all(np.isfinite(index.pose_3d))
  clips, _ = ip.make_clips(index, tiny_config.clip_length)
  assert 7 not in clips
  assert not (tmp_path / "rpsm_index_train.npz").exists()   # re-checked next time
