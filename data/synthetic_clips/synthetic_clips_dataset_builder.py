"""synthetic_clips: procedurally generated, rendered 3D pose sequences (no download).

A stand-in for Human3.6M with the same per-frame schema (data/README.md), for smoke
tests, CPU runs and checking that a model learns 3D from images at all. Writes
array_record by default and needs no TensorFlow to build or read.
"""

import dataclasses
import os

import tensorflow_datasets as tfds

from . import motion
from . import sequences

try:
  from data._builder_tools import builders
  from data._builder_tools import pool
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import builders
  from _builder_tools import pool

_NUM_JOINTS = motion.NUM_JOINTS
# Overrides the number of generator processes (0 or 1: generate in-process).
_WORKERS_ENV = "SYNTHETIC_CLIPS_WORKERS"


@dataclasses.dataclass
class SyntheticClipsConfig(tfds.core.BuilderConfig):
  """Size of the generated dataset.

  Attributes:
    num_train_subjects: train subjects (S1, S5, S6, S7, S8, then S21, S22, ...).
    num_test_subjects: test subjects (S9, S11, then S51, S52, ...), disjoint from train.
    num_actions: the first n of motion.ACTIONS.
    num_takes: sub-sequences per (subject, action), each with its own random phase,
      speed, amplitude, path and background.
    num_test_takes: takes per (subject, action) of the test split; 0: num_takes.
    num_cameras: cameras per sequence (each camera is its own sequence).
    frames_per_sequence: stored frames per sequence.
    fps: frame rate of the stored frames (10: like Human3.6M's 50 fps subsampled 5x).
    image_size: S, side of the stored square crops, pixels.
    jpeg_quality: JPEG quality of the stored images.
    num_occluders: bars and discs crossing each camera's view in front of the person
      during a sequence, so that some frames hide body parts that neighbouring frames
      show (temporal context helps); 0: none.
    seed: everything generated is a function of it.
    num_workers: generator processes; 0 picks min(cpu count, 8). The environment
      variable SYNTHETIC_CLIPS_WORKERS overrides it.
  """
  num_train_subjects: int = 5
  num_test_subjects: int = 2
  num_actions: int = 8
  num_takes: int = 1
  num_test_takes: int = 0
  num_cameras: int = 4
  frames_per_sequence: int = 48
  fps: float = 10.
  image_size: int = 128
  jpeg_quality: int = 90
  num_occluders: int = 0
  seed: int = 0
  num_workers: int = 0


def _config(name: str, description: str, **kwargs) -> SyntheticClipsConfig:
  return SyntheticClipsConfig(name=name, description=description, **kwargs)


class Builder(builders.BuilderMixin, tfds.core.GeneratorBasedBuilder):
  """Synthetic Human3.6M-like clips: one example per frame and camera."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      _config("default", "5 train / 2 test subjects, 8 actions, 4 cameras, 48 frames, "
              "128 px; builds in under a minute on 2 CPU cores."),
      _config("occluded", "default with 3 bars or discs crossing each camera's view in "
              "front of the person: parts hidden in one frame show in its neighbours.",
              num_occluders=3),
      _config("occluded_4takes", "occluded with 4 takes per subject and action (take 1 is "
              "occluded's sequence): 4x the poses and frames of every subject.",
              num_occluders=3, num_takes=4),
      _config("occluded_8takes", "occluded with 8 takes per subject and action (takes 1-4 "
              "are occluded_4takes'): 8x the poses and frames of every subject.",
              num_occluders=3, num_takes=8),
      _config("occluded_20subjects", "occluded with 20 train subjects (S1, S5-S8, S21-S35) "
              "of one take each: occluded_4takes' train frame count, 4x its bodies and "
              "a quarter of its motions per body; test as occluded_4takes' (4 takes).",
              num_occluders=3, num_train_subjects=20, num_takes=1, num_test_takes=4),
      _config("tiny", "For tests: 2 train / 1 test subjects, 2 actions, 2 cameras, "
              "8 frames, 64 px; builds in seconds.",
              num_train_subjects=2, num_test_subjects=1, num_actions=2, num_cameras=2,
              frames_per_sequence=8, image_size=64, num_workers=1),
      _config("medium", "8 train / 3 test subjects, 10 actions, 2 takes, 4 cameras, "
              "100 frames, 256 px.",
              num_train_subjects=8, num_test_subjects=3, num_actions=10, num_takes=2,
              frames_per_sequence=100, image_size=256),
      _config("large", "12 train / 4 test subjects, 10 actions, 3 takes, 4 cameras, "
              "120 frames, 368 px (the paper's input size).",
              num_train_subjects=12, num_test_subjects=4, num_actions=10, num_takes=3,
              frames_per_sequence=120, image_size=368),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return builders.frame_info(
        self, _NUM_JOINTS, {
            "image": "RGB square crop around the person, resized to S x S.",
            "pose_3d": "Joints in camera coordinates (x right, y down, z forward), mm, "
                       "not root-relative.",
            "pose_2d": "Joints in pixels of the stored S x S crop.",
            "box": "Person box [x0, y0, x1, y1], full-image pixels.",
            "crop_box": "Square crop [x0, y0, x1, y1], full-image pixels.",
            "camera/p": "Tangential distortion p1, p2.",
            "sequence_id": "'<subject>/<action>.<take>/<camera>', unique per sequence.",
            "frame_index": "Frame number within the sequence.",
        })

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    return {
        "train": self._generate_examples(
            sequences.subjects("train", cfg.num_train_subjects), cfg.num_takes),
        "test": self._generate_examples(
            sequences.subjects("test", cfg.num_test_subjects),
            cfg.num_test_takes or cfg.num_takes),
    }

  def _generate_examples(self, subjects: list[str], num_takes: int):
    """Yields (key, example) per frame; key '<sequence_id>/<frame index>'."""
    cfg = self.builder_config
    specs = [
        sequences.SequenceSpec(
            seed=cfg.seed, subject=subject, action=action, take=take,
            num_frames=cfg.frames_per_sequence, fps=cfg.fps,
            image_size=cfg.image_size, num_cameras=cfg.num_cameras,
            jpeg_quality=cfg.jpeg_quality, num_occluders=cfg.num_occluders)
        for subject in subjects
        for action in motion.ACTIONS[:cfg.num_actions]
        for take in range(1, num_takes + 1)
    ]
    workers = _num_workers(cfg, len(specs))
    if workers <= 1:
      for spec in specs:
        yield from sequences.film(spec)
      return
    # Sequences are independent and seeded by their identity, so the output does not
    # depend on the number of processes; the pool keeps the order, and its workers
    # end with this process however it ends.
    with pool.OrderedPool(sequences.film_items, specs, workers) as runner:
      for index in range(len(specs)):
        yield from runner.results(index)


def _num_workers(cfg: SyntheticClipsConfig, num_tasks: int) -> int:
  default = min(os.cpu_count() or 1, 8)
  return min(builders.num_workers(_WORKERS_ENV, cfg.num_workers, default), num_tasks)
