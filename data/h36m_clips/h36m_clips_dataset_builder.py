"""h36m_clips: Human3.6M video frames, square person crops and 3D/2D poses.

One example per kept frame and camera, in the per-frame schema all our datasets share
(data/README.md); frames stay in sequence order (one array_record shard per
sequence), and the input pipeline cuts clips from them. Built from the official
release extracted into the manual dir (README.md beside this file). Writes
array_record by default and needs no TensorFlow to build or read.
"""

import collections
import dataclasses
import functools
import pathlib
import re
from collections.abc import Mapping, Sequence

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
# The standard protocol's subjects (the paper's and most published results').
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
_PROTOCOL = "train S1, S5, S6, S7, S8 / test S9, S11"
# '<registered config>_<subjects>', e.g. 'crop128_step5_s1s5s9s11' (subset_config).
_SUBSET_NAME = re.compile(r"^(?P<base>.+)_(?P<subjects>(?:s\d+)+)$")


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
  train_subjects: tuple[str, ...] = TRAIN_SUBJECTS
  test_subjects: tuple[str, ...] = TEST_SUBJECTS
  skip_sequences: tuple[str, ...] = ("S11/Directions",)
  box_margin: float = 0.1
  cameras: Mapping[str, cameras_lib.Intrinsics] | None = None
  num_workers: int = 0


def _config(name: str, description: str, **kwargs) -> H36mClipsConfig:
  return H36mClipsConfig(name=name, description=description, **kwargs)


def subset_config_name(base: str, subjects: Sequence[str]) -> str:
  """The name of registered config `base` over `subjects` only: 'crop128_step5_s1s9'.

  Subjects are written in the protocol's order (S1, S5, ..., S11), whatever order
  they are given in.
  """
  order = TRAIN_SUBJECTS + TEST_SUBJECTS
  return f"{base}_" + "".join(s.lower() for s in order if s in set(subjects))


@functools.cache  # One object per name: TFDS compares configs by identity.
def subset_config(name: str) -> H36mClipsConfig | None:
  """The config that a subset name stands for, None if `name` is not one.

  '<registered config>_<subjects>' (subset_config_name) is that config with train =
  its train subjects among those listed, test = its test subjects among them: a
  partial release builds, and training loads the build by this name.

  Raises:
    ValueError: the base is registered but the subjects are not a usable subset.
  """
  match = _SUBSET_NAME.match(name)
  base = match and next((c for c in Builder.BUILDER_CONFIGS
                         if c.name == match["base"]), None)
  if base is None:
    return None
  subjects = [s.upper() for s in re.findall(r"s\d+", match["subjects"])]
  unknown = [s for s in subjects if s not in base.train_subjects + base.test_subjects]
  if unknown:
    raise ValueError(f"h36m_clips config {name!r}: {', '.join(unknown)} not among the "
                     f"subjects of config {base.name!r} ({_PROTOCOL})")
  canonical = subset_config_name(base.name, subjects)
  if name != canonical:
    raise ValueError(f"h36m_clips config {name!r}: write it {canonical!r} (subjects "
                     "once each, in the order S1, S5, S6, S7, S8, S9, S11)")
  train = tuple(s for s in base.train_subjects if s in subjects)
  test = tuple(s for s in base.test_subjects if s in subjects)
  if not train or not test:
    raise ValueError(f"h36m_clips config {name!r}: needs at least one train subject "
                     f"({', '.join(base.train_subjects)}) and one test subject "
                     f"({', '.join(base.test_subjects)})")
  return dataclasses.replace(
      base, name=name, train_subjects=train, test_subjects=test,
      description=f"{base.description} Subjects {', '.join(train)} (train) and "
                  f"{', '.join(test)} (test) only: not the standard protocol.")


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

  @classmethod
  def get_builder_config(cls, name: str, version=None) -> H36mClipsConfig | None:
    """A registered config, or a subset of one by name (subset_config)."""
    config = super().get_builder_config(name, version)
    return config if config is not None else subset_config(name)

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
    self._check_subjects(manual_dir)
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

  def _check_subjects(self, manual_dir: pathlib.Path) -> None:
    """Fails naming every subject missing from the release; records the subjects in
    the metadata and warns when they are not the standard protocol's."""
    cfg = self.builder_config
    wanted = cfg.train_subjects + cfg.test_subjects
    present = [s for s in TRAIN_SUBJECTS + TEST_SUBJECTS
               if (manual_dir / s / release.POSE_3D_DIR).is_dir()]
    missing = [s for s in wanted if not (manual_dir / s / release.POSE_3D_DIR).is_dir()]
    if missing:
      base = cfg.name
      if subset_config(cfg.name) is not None:
        base = _SUBSET_NAME.match(cfg.name)["base"]
      hint = ""
      if (self.get_builder_config(base) is not None
          and any(s in cfg.train_subjects for s in present)
          and any(s in cfg.test_subjects for s in present)):
        hint = (f" To build over the subjects present (not the standard protocol), "
                f"use --config={subset_config_name(base, present)}.")
      raise release.ReleaseError(
          f"h36m_clips config {cfg.name!r}: subjects {', '.join(missing)} missing from "
          f"{manual_dir} (no <subject>/{release.POSE_3D_DIR} folder); present: "
          f"{', '.join(present) or 'none'}.{hint} See the manual download "
          "instructions.")
    left_out = [s for s in TRAIN_SUBJECTS + TEST_SUBJECTS if s not in wanted]
    standard = (cfg.train_subjects, cfg.test_subjects) == (TRAIN_SUBJECTS, TEST_SUBJECTS)
    self.info.metadata["subjects"] = {"train": list(cfg.train_subjects),
                                      "test": list(cfg.test_subjects)}
    self.info.metadata["standard_protocol"] = standard
    self.info.metadata["subjects_left_out"] = left_out
    if not standard:
      logging.warning(
          "h36m_clips config %s: train %s / test %s%s. The standard protocol (%s) no "
          "longer holds: errors on this test split are not comparable with published "
          "Human3.6M results.", cfg.name, ", ".join(cfg.train_subjects),
          ", ".join(cfg.test_subjects),
          f", without {', '.join(left_out)}" if left_out else "", _PROTOCOL)

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
    """Logs what was substituted or cross-checked, naming every file substituted or
    not used, and stores it in the metadata."""
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
    # Workers log as they go, but not necessarily into this log: name every file here.
    for r in reports:
      if r.box_renamed:
        logging.warning("h36m_clips split %s: %s: box masks read from %s, found under "
                        "another name (expected %s)", split, r.sequence_id, r.box_file,
                        r.box_expected)
    for r in fallback:
      logging.warning("h36m_clips split %s: %s: boxes from projected joints for %d "
                      "frames: %s", split, r.sequence_id, r.box_fallback_frames,
                      r.box_problem or f"empty or broken masks in {r.box_file}")
    for r in reports:
      if r.pose_2d_error_px is None:  # Optional files: only a damaged one is a warning.
        logging.log(logging.INFO if r.pose_2d_problem.startswith("no 2D pose file")
                    else logging.WARNING, "h36m_clips split %s: %s: 2D cross-check "
                    "skipped: %s", split, r.sequence_id, r.pose_2d_problem)
    if errors and summary["pose_2d_mean_error_px"] > _MAX_POSE_2D_ERROR_PX:
      logging.warning(
          "h36m_clips split %s: our projection is %.1f px off the release's 2D "
          "poses (expected < %.0f px): are the camera intrinsics right?", split,
          summary["pose_2d_mean_error_px"], _MAX_POSE_2D_ERROR_PX)

