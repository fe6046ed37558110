"""humaneva_clips: HumanEva-I video frames, square person crops and 3D/2D poses (14 joints).

One example per kept frame and colour camera, in the per-frame schema all our datasets
share (data/README.md), with P = 14 (rpsm_jax.joints.HUMANEVA_JOINTS). The paper's
protocol: actions Walking, Jogging, Boxing of subjects S1-S3; split 'train' = the
release's "Train" frames, 'test' = its "Validate" frames. Frames stay in sequence order
(one array_record shard per chunk and camera); the input pipeline cuts clips. Built from
the release's videos and calibration plus VideoPose3D's 3D joints in the manual dir
(README.md beside this file). Writes array_record and needs no TensorFlow.
"""

import dataclasses
import pathlib
from collections.abc import Mapping

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from rpsm_jax import joints

from . import examples
from . import release

try:
  from data._builder_tools import builders
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import builders

_NUM_JOINTS = len(joints.HUMANEVA_JOINTS)
# Overrides the config's number of worker processes (0: generate in-process).
_WORKERS_ENV = "HUMANEVA_CLIPS_WORKERS"
_SPLITS = {"train": "Train", "test": "Validate"}
# Warn above these: our projection vs VideoPose3D's 2D joints; .cal camera centre vs
# VideoPose3D's; share of projected joints outside the image.
_MAX_POSE_2D_ERROR_PX = 2.0
_MAX_CENTRE_OFFSET_MM = 100.0
_MAX_OUTSIDE = 0.05


@dataclasses.dataclass
class HumanEvaClipsConfig(tfds.core.BuilderConfig):
  """What to keep from the release and how to store it.

  Attributes:
    image_size: S, side of the stored square crops, pixels.
    frame_step: keep frames 0, step, 2 step, ... of each chunk (60 Hz; 6 gives 10 fps).
    jpeg_quality: JPEG quality of the stored crops.
    subjects: subjects of both splits.
    actions: canonical actions kept (joints.HUMANEVA_ACTIONS; also ThrowCatch,
      Gestures).
    cameras: colour cameras kept.
    box_margin: the person box is the projected joints' extent grown by this fraction
      of its longer side on every side (HumanEva has no masks).
    frame_ranges: None: release.FRAME_RANGES (tests pass small ones).
    sync_offsets: None: release.SYNC_OFFSETS.
    camera_centres: None: release.CAMERA_CENTRES, a cross-check of the .cal files.
    num_workers: worker processes; 0: one per available CPU core. The environment
      variable HUMANEVA_CLIPS_WORKERS overrides it (0 there: in-process).
  """
  image_size: int = 368
  frame_step: int = 1
  jpeg_quality: int = 95
  subjects: tuple[str, ...] = ("S1", "S2", "S3")
  actions: tuple[str, ...] = joints.HUMANEVA_ACTIONS
  cameras: tuple[str, ...] = release.CAMERAS
  box_margin: float = 0.1
  frame_ranges: Mapping | None = None
  sync_offsets: Mapping | None = None
  camera_centres: Mapping | None = None
  num_workers: int = 0


def _config(name: str, description: str, **kwargs) -> HumanEvaClipsConfig:
  return HumanEvaClipsConfig(name=name, description=description, **kwargs)


class Builder(builders.BuilderMixin, tfds.core.ShardBasedBuilder):
  """HumanEva-I frames for RPSM: one example per kept frame and colour camera."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  HumanEva-I cannot be downloaded automatically: register at the dataset's website and
  download HumanEva-I. Convert its mocap with VideoPose3D's HumanEva instructions
  (ConvertHumanEva.m, then prepare_data_humaneva.py --convert-3d). Put into one folder,
  the manual dir:

    data_3d_humaneva15.npz                          (required, VideoPose3D)
    data_2d_humaneva15_detectron_pt_coco.npz        (optional: places chunks after gaps)
    data_2d_humaneva15_gt.npz                       (optional: a projection cross-check)
    S1/Image_Data/Walking_1_(C1).avi ...            (required, the release)
    S1/Calibration_Data/C1.cal ...                  (required, the release)

  then build with --manual_dir=<that folder> (data/humaneva_clips/README.md).
  """
  BUILDER_CONFIGS = [
      _config("crop368_step1", "The paper's setting: 368 px crops, every frame (60 Hz)."),
      _config("crop368_step6", "368 px crops, every 6th frame (10 fps).", frame_step=6),
      _config("crop184_step1", "184 px crops, every frame.", image_size=184),
      _config("crop128_step1", "128 px crops, every frame (CPU configs).",
              image_size=128),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "crop368_step1"

  def _info(self) -> tfds.core.DatasetInfo:
    return builders.frame_info(
        self, _NUM_JOINTS, {
            "pose_3d": "14 joints (joints.HUMANEVA_JOINTS), camera coordinates (x right, "
                       "y down, z forward), mm, not root-relative.",
            "pose_2d": "pose_3d projected with the camera's calibration (Bouguet model), "
                       "pixels of the stored S x S crop.",
            "box": "Person box [x0, y0, x1, y1], full-image pixels: the projected "
                   "joints' extent plus box_margin.",
            "camera/name": "C1, C2 or C3.",
            "camera/c": "Principal point, pixels (edge convention).",
            "camera/p": "Tangential distortion p1, p2 (Bouguet's model).",
            "action": "Walking, Jogging or Boxing.",
            "sequence_id": "'<split>/<subject>/<trial> chunk<i>/<camera>', e.g. "
                           "'Train/S1/Walking 1 chunk0/C1'.",
            "frame_index": "Frame number on the synchronised 60 Hz clock.",
        },
        homepage="http://humaneva.is.tue.mpg.de/",
        metadata=tfds.core.MetadataDict())

  def _options(self) -> examples.Options:
    cfg = self.builder_config
    builders.check_clip_config("humaneva_clips", cfg)
    unknown = set(cfg.cameras) - set(release.CAMERAS)
    if unknown:
      raise ValueError(f"humaneva_clips config {cfg.name!r}: cameras {sorted(unknown)} "
                       f"are not colour cameras {release.CAMERAS}")
    return examples.Options(image_size=cfg.image_size, frame_step=cfg.frame_step,
                            jpeg_quality=cfg.jpeg_quality, box_margin=cfg.box_margin)

  def _shard_iterators_per_split(self, dl_manager: tfds.download.DownloadManager):
    """One shard per (chunk, camera); checks every required file before writing any."""
    cfg = self.builder_config
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    options = self._options()
    poses_3d = release.load_npz_dict(manual_dir / release.POSES_3D_FILE, "positions_3d")
    lengths_path = manual_dir / release.CHUNK_LENGTHS_FILE
    all_lengths = None
    if lengths_path.exists():
      all_lengths = release.chunk_lengths(
          lengths_path, release.load_npz_dict(lengths_path, "positions_2d"))
    poses_2d_path = manual_dir / release.POSES_2D_FILE
    poses_2d = (release.load_npz_dict(poses_2d_path, "positions_2d")
                if poses_2d_path.exists() else None)
    sequences, unplaced = {}, {}
    for split, release_split in _SPLITS.items():
      sequences[split], unplaced[split] = release.find_sequences(
          manual_dir, release_split, cfg.subjects, cfg.actions, cfg.cameras, poses_3d,
          frame_ranges=cfg.frame_ranges or release.FRAME_RANGES,
          sync_offsets=cfg.sync_offsets or release.SYNC_OFFSETS,
          all_chunk_lengths=all_lengths, poses_2d=poses_2d)
      for sequence in sequences[split]:
        release.check_video(sequence)
      logging.info("humaneva_clips: %d sequences in split %s", len(sequences[split]),
                   split)
      if unplaced[split]:
        logging.warning(
            "humaneva_clips split %s: %d chunks left out because an invalid chunk of "
            "unknown length precedes them (put %s in the manual dir to place them): %s",
            split, len(unplaced[split]), release.CHUNK_LENGTHS_FILE, unplaced[split])
    self._check_cameras([s for seqs in sequences.values() for s in seqs])
    return self._shards(sequences, unplaced, options)

  def _check_cameras(self, sequences: list[release.Sequence]) -> None:
    """Compares each .cal file's camera centre with VideoPose3D's; stores the offsets."""
    centres = self.builder_config.camera_centres
    centres = release.CAMERA_CENTRES if centres is None else centres
    offsets = {}
    for sequence in sequences:
      expected = centres.get(sequence.subject, {}).get(sequence.camera)
      if expected is not None:
        offsets[f"{sequence.subject}/{sequence.camera}"] = float(np.linalg.norm(
            sequence.calibration.centre - np.asarray(expected)))
    self.info.metadata["camera_centre_offset_mm"] = offsets
    far = {k: round(v) for k, v in offsets.items() if v > _MAX_CENTRE_OFFSET_MM}
    if far:
      logging.warning("humaneva_clips: camera centres from the .cal files are far (mm) "
                      "from VideoPose3D's: %s; check the calibration files", far)

  def _shards(self, sequences, unplaced, options: examples.Options):
    """Shard generator functions per split, one per sequence, from one worker pool."""

    def log(index, total, sequence, report, elapsed):
      logging.info("humaneva_clips: %d/%d sequences (%s, %d frames), %.1f min",
                   index + 1, total, sequence.sequence_id, report.num_examples,
                   elapsed / 60)

    def summarize(split, reports):
      self._summarize(split, reports, unplaced[split])

    workers = builders.num_workers(_WORKERS_ENV, self.builder_config.num_workers)
    return builders.sequence_shards(examples.task_examples, sequences, options, workers,
                                    log, summarize)

  def _summarize(self, split: str, reports: list[examples.Report],
                 unplaced: list[str]) -> None:
    """Logs the cross-checks and stores them in the dataset's metadata."""
    errors = [r.pose_2d_error_px for r in reports if r.pose_2d_error_px is not None]
    frames = sum(r.num_examples for r in reports)
    outside = (sum(r.joints_outside_image * r.num_examples for r in reports)
               / max(frames, 1))
    summary = {
        "sequences": len(reports),
        "examples": frames,
        "chunks_unplaced": unplaced,
        "pose_2d_checked_sequences": len(errors),
        "pose_2d_mean_error_px": float(np.mean(errors)) if errors else None,
        "pose_2d_max_sequence_error_px": float(np.max(errors)) if errors else None,
        "joints_outside_image": float(outside),
    }
    self.info.metadata[split] = summary
    logging.warning(
        "humaneva_clips split %s: %d examples from %d sequences; %d chunks left out; "
        "VideoPose3D's 2D joints vs our projection: %s px mean over %d sequences; "
        "%.1f%% of projected joints outside the image.", split, frames, len(reports),
        len(unplaced), "n/a" if not errors else f"{summary['pose_2d_mean_error_px']:.2f}",
        len(errors), 100 * outside)
    if errors and summary["pose_2d_mean_error_px"] > _MAX_POSE_2D_ERROR_PX:
      logging.warning("humaneva_clips split %s: our projection is %.1f px off "
                      "VideoPose3D's 2D joints: are the calibration files right?", split,
                      summary["pose_2d_mean_error_px"])
    if outside > _MAX_OUTSIDE:
      logging.warning("humaneva_clips split %s: %.0f%% of joints project outside the "
                      "image: calibration or synchronisation wrong?", split,
                      100 * outside)

