"""h36m_clips: Human3.6M video frames, square person crops and 3D/2D poses.

One example per kept frame and camera, in the per-frame schema all our datasets share
(data/README.md); frames stay in sequence order (one array_record shard per
sequence), and the input pipeline cuts clips from them. Built from the official
release extracted into the manual dir (README.md beside this file). Writes
array_record by default and needs no TensorFlow to build or read.
"""

import collections
import dataclasses
import pathlib
from collections.abc import Mapping

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from rpsm_jax import joints

from . import cameras as cameras_lib
from . import examples
from . import release

try:
  from data._builder_tools import builders
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import builders

_NUM_JOINTS = len(joints.H36M_JOINTS)
# Overrides the config's number of worker processes (0: generate in-process).
_WORKERS_ENV = "H36M_CLIPS_WORKERS"
# Above this mean distance to the release's 2D poses the build warns.
_MAX_POSE_2D_ERROR_PX = 2.0


@dataclasses.dataclass
class H36mClipsConfig(tfds.core.BuilderConfig):
  """What to keep from the release and how to store it.

  Attributes:
    image_size: S, side of the stored square crops, pixels.
    frame_step: keep raw 50 fps frames 0, step, 2 step, ... of each sequence.
    jpeg_quality: JPEG quality of the stored crops.
    train_subjects: subjects of the 'train' split.
    test_subjects: subjects of the 'test' split.
    skip_sequences: 'S11/Directions' skips that release action (all cameras),
      'S11/Directions/54138969' one camera.
    box_margin: when a frame has no usable box mask, the box is the projected joints'
      extent grown by this fraction of its longer side on every side.
    cameras: intrinsics by camera serial; None: the published Human3.6M ones
      (cameras.H36M_CAMERAS). Tests pass small fake cameras.
    num_workers: worker processes; 0: one per available CPU core. The environment
      variable H36M_CLIPS_WORKERS overrides it (0 there: no workers, in-process).
  """
  image_size: int = 368
  frame_step: int = 5
  jpeg_quality: int = 95
  train_subjects: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
  test_subjects: tuple[str, ...] = ("S9", "S11")
  skip_sequences: tuple[str, ...] = ("S11/Directions",)
  box_margin: float = 0.1
  cameras: Mapping[str, cameras_lib.Intrinsics] | None = None
  num_workers: int = 0


def _config(name: str, description: str, **kwargs) -> H36mClipsConfig:
  return H36mClipsConfig(name=name, description=description, **kwargs)


class Builder(builders.BuilderMixin, tfds.core.ShardBasedBuilder):
  """Human3.6M frames for RPSM: one example per kept frame and camera."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Human3.6M cannot be downloaded automatically: register at the dataset's website,
  accept its licence, and download, per subject S1, S5, S6, S7, S8, S9 and S11, the
  archives "Poses > D3 Positions mono", "Videos", "Segments > BBoxes" and
  (optional, for a projection cross-check) "Poses > D2 Positions". Extract them all
  into one folder, the manual dir, so that it holds per subject:

    S1/MyPoseFeatures/D3_Positions_mono/Directions 1.54138969.cdf   (required)
    S1/Videos/Directions 1.54138969.mp4                             (required)
    S1/MySegmentsMat/ground_truth_bb/Directions 1.54138969.mat      (boxes)
    S1/MyPoseFeatures/D2_Positions/Directions 1.54138969.cdf        (optional)

  then build with --manual_dir=<that folder> (data/h36m_clips/README.md).
  """
  BUILDER_CONFIGS = [
      _config("crop368_step5",
              "The paper's data: 368 px crops, every 5th frame (10 fps)."),
      _config("crop368_step1", "368 px crops, every frame (50 fps); ~5x the size.",
              frame_step=1),
      _config("crop256_step5", "256 px crops, every 5th frame.", image_size=256),
      _config("crop184_step5", "184 px crops, every 5th frame (half the paper's "
              "input; small GPU/CPU configs).", image_size=184),
      _config("crop128_step5", "128 px crops, every 5th frame (CPU configs).",
              image_size=128),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "crop368_step5"

  def _info(self) -> tfds.core.DatasetInfo:
    return builders.frame_info(
        self, _NUM_JOINTS, {
            "pose_3d": "17 joints (joints.H36M_JOINTS), camera coordinates (x right, y "
                       "down, z forward), mm, not root-relative.",
            "pose_2d": "pose_3d projected with the camera's distortion model, pixels of "
                       "the stored S x S crop.",
            "box": "Person box [x0, y0, x1, y1], full-image pixels: the ground-truth "
                   "mask's extent, or projected joints plus a margin where the mask is "
                   "missing.",
            "camera/name": "Camera serial.",
            "camera/p": "Tangential distortion p1, p2 (devkit order).",
            "action": "Canonical action (H36M_ACTIONS).",
            "sequence_id": "'<subject>/<release action>/<camera>', e.g. "
                           "'S1/Directions 1/54138969'.",
            "frame_index": "Frame in the raw 50 fps sequence.",
        },
        homepage="http://vision.imar.ro/human3.6m/",
        metadata=tfds.core.MetadataDict())

  def _options(self) -> examples.Options:
    cfg = self.builder_config
    builders.check_clip_config("h36m_clips", cfg)
    return examples.Options(
        image_size=cfg.image_size, frame_step=cfg.frame_step,
        jpeg_quality=cfg.jpeg_quality, box_margin=cfg.box_margin,
        cameras=dict(cfg.cameras or cameras_lib.H36M_CAMERAS))

  def _shard_iterators_per_split(self, dl_manager: tfds.download.DownloadManager):
    """One shard per sequence; checks every required file before writing any."""
    cfg = self.builder_config
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    options = self._options()
    split_subjects = {"train": cfg.train_subjects, "test": cfg.test_subjects}
    sequences = {}
    for split, subjects in split_subjects.items():
      sequences[split] = release.find_sequences(manual_dir, subjects,
                                                cfg.skip_sequences)
      for sequence in sequences[split]:
        if sequence.camera not in options.cameras:
          raise release.ReleaseError(f"{sequence.pose_3d_path}: no intrinsics for "
                                     f"camera {sequence.camera}")
        release.check_sequence(sequence)
      logging.info("h36m_clips: %d sequences in split %s", len(sequences[split]),
                   split)
    return self._shards(sequences, options)

  def _shards(self, sequences: dict[str, list[release.Sequence]],
              options: examples.Options):
    """Shard generator functions per split, one per sequence, from one worker pool."""

    def log(index, total, sequence, report, elapsed):
      logging.info("h36m_clips: %d/%d sequences (%s, %d frames), %.0f min, "
                   "%.0f min left", index + 1, total, sequence.sequence_id,
                   report.num_examples, elapsed / 60,
                   elapsed / (index + 1) * (total - index - 1) / 60)

    workers = builders.num_workers(_WORKERS_ENV, self.builder_config.num_workers)
    return builders.sequence_shards(examples.task_examples, sequences, options, workers,
                                    log, self._summarize)

  def _summarize(self, split: str, reports: list[examples.Report]) -> None:
    """Logs what was substituted or cross-checked and stores it in the metadata."""
    fallback = [r for r in reports if r.box_fallback_frames]
    errors = [r.pose_2d_error_px for r in reports if r.pose_2d_error_px is not None]
    summary = {
        "sequences": len(reports),
        "examples": sum(r.num_examples for r in reports),
        "box_fallback_frames": sum(r.box_fallback_frames for r in reports),
        "box_fallback_sequences": {
            r.sequence_id: {"frames": r.box_fallback_frames,
                            "why": r.box_problem or "empty or broken masks"}
            for r in fallback},
        "box_files_renamed": [r.box_file for r in reports if r.box_renamed],
        "pose_2d_checked_sequences": len(errors),
        "pose_2d_unchecked": {r.sequence_id: r.pose_2d_problem for r in reports
                              if r.pose_2d_error_px is None},
        "pose_2d_mean_error_px": float(np.mean(errors)) if errors else None,
        "pose_2d_max_sequence_error_px": float(np.max(errors)) if errors else None,
    }
    self.info.metadata[split] = summary
    problems = collections.Counter(
        (r.box_problem or "empty or broken masks").split(" ")[0] for r in fallback)
    logging.warning(
        "h36m_clips split %s: %d examples from %d sequences; boxes from projected "
        "joints (+%.0f%% margin) for %d frames in %d sequences %s; %d box files "
        "found under another name; release 2D poses vs our projection: %s px mean "
        "over %d sequences.", split, summary["examples"], len(reports),
        100 * self.builder_config.box_margin, summary["box_fallback_frames"],
        len(fallback), dict(problems), len(summary["box_files_renamed"]),
        "n/a" if not errors else f"{summary['pose_2d_mean_error_px']:.2f}",
        len(errors))
    for r in fallback:
      logging.info("  %s: %d frames, %s", r.sequence_id, r.box_fallback_frames,
                   r.box_problem or "empty or broken masks")
    if errors and summary["pose_2d_mean_error_px"] > _MAX_POSE_2D_ERROR_PX:
      logging.warning(
          "h36m_clips split %s: our projection is %.1f px off the release's 2D "
          "poses (expected < %.0f px): are the camera intrinsics right?", split,
          summary["pose_2d_mean_error_px"], _MAX_POSE_2D_ERROR_PX)

