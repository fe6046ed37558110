"""Examples of one Human3.6M sequence, streamed from its video.

Runs in worker processes: it imports neither TensorFlow nor tensorflow_datasets, and
holds one decoded frame at a time.
"""

import dataclasses
from collections.abc import Generator, Mapping

from absl import logging
import numpy as np

from rpsm_jax import joints

from . import cameras
from . import release

try:
  from data._builder_tools import crops
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import crops

_FROM_32 = np.asarray(joints.H36M_FROM_32)


@dataclasses.dataclass(frozen=True)
class Options:
  """How examples are made (from the builder config).

  Attributes:
    image_size: S, side of the stored crops, pixels.
    frame_step: keep raw frames 0, step, 2 step, ... (5: 50 fps -> 10 fps).
    jpeg_quality: JPEG quality of the stored crops.
    box_margin: margin of a box made from projected joints, fraction of its longer
      side on every side.
    cameras: intrinsics by camera serial.
  """
  image_size: int
  frame_step: int
  jpeg_quality: int
  box_margin: float
  cameras: Mapping[str, cameras.Intrinsics]


@dataclasses.dataclass
class Report:
  """What happened to one sequence, for the end-of-build summary.

  Attributes:
    sequence_id: 'S1/Directions 1/54138969'.
    num_examples: frames written.
    num_poses: poses in the 3D pose file (raw 50 fps frames used).
    box_file: the box-mask file used, '' if none.
    box_problem: why boxes came from projected joints for the whole sequence
      (missing or damaged file), '' if they did not.
    box_renamed: the box file was found under another spelling of the action.
    box_expected: the box file's name in the release's usual spelling.
    box_fallback_frames: frames whose box came from projected joints.
    pose_2d_error_px: mean distance between our projection of the 3D joints and
      the release's 2D joints over written frames and the 32 joints, pixels;
      None without a readable 2D file.
    pose_2d_problem: why the 2D cross-check did not run, '' if it did.
  """
  sequence_id: str
  num_examples: int = 0
  num_poses: int = 0
  box_file: str = ""
  box_problem: str = ""
  box_renamed: bool = False
  box_expected: str = ""
  box_fallback_frames: int = 0
  pose_2d_error_px: float | None = None
  pose_2d_problem: str = ""


def _open_boxes(sequence: release.Sequence, report: Report) -> release.MaskBoxes | None:
  path, report.box_renamed = sequence.box_path()
  report.box_expected = str(sequence.expected_box_path)
  if path is None:
    report.box_problem = f"missing {sequence.expected_box_path}"
    return None
  report.box_file = str(path)
  try:
    return release.MaskBoxes(path)
  except Exception as e:  # Damaged: h5py raises OSError, KeyError, ValueError.
    report.box_problem = f"damaged {path} ({type(e).__name__}: {e})"
    return None


def _pose_2d_error(sequence: release.Sequence, kept: np.ndarray, projected: np.ndarray,
                   report: Report) -> None:
  """Cross-checks our projection against the release's optional 2D poses."""
  if not sequence.pose_2d_path.is_file():
    report.pose_2d_problem = f"no 2D pose file {sequence.pose_2d_path}"
    return
  try:
    pose_2d = release.read_poses(sequence.pose_2d_path, release.NUM_RAW_JOINTS * 2)
  except release.ReleaseError as e:
    report.pose_2d_problem = str(e)
    logging.warning("%s", e)
    return
  kept = kept[kept < len(pose_2d)]
  if not len(kept):
    report.pose_2d_problem = f"{sequence.pose_2d_path} has {len(pose_2d)} poses"
    return
  theirs = pose_2d[kept].reshape(len(kept), release.NUM_RAW_JOINTS, 2)
  ours = projected[:len(kept)]
  report.pose_2d_error_px = float(np.linalg.norm(ours - theirs, axis=-1).mean())


def sequence_examples(
    sequence: release.Sequence, options: Options
) -> Generator[tuple[int, dict], None, Report]:
  """Yields (raw frame index, example) for the kept frames of one sequence.

  The release's videos hold a few frames more than the pose files: frames without
  a pose are ignored. Returns (as the generator's value) the sequence's Report.

  Raises:
    ReleaseError: a required file is missing, unreadable, or the video has fewer
      frames than the pose file.
  """
  report = Report(sequence.sequence_id)
  intrinsics = options.cameras[sequence.camera]
  pose_3d = release.read_poses(sequence.pose_3d_path, release.NUM_RAW_JOINTS * 3)
  pose_3d = pose_3d.reshape(len(pose_3d), release.NUM_RAW_JOINTS, 3)
  report.num_poses = num_poses = len(pose_3d)
  kept = np.arange(0, num_poses, options.frame_step)
  projected = cameras.project(pose_3d[kept], intrinsics)  # (K, 32, 2)
  _pose_2d_error(sequence, kept, projected, report)
  boxes = _open_boxes(sequence, report)
  if report.box_problem:
    logging.warning("%s: boxes from projected joints: %s", sequence.sequence_id,
                    report.box_problem)
  camera = None
  size = options.image_size
  capture = release.open_video(sequence.video_path)
  try:
    next_kept = 0
    for index in range(num_poses):
      # grab() decodes without the colour conversion retrieve() adds.
      if not capture.grab():
        raise release.ReleaseError(
            f"{sequence.video_path}: video ended after {index} frames but "
            f"{sequence.pose_3d_path} has {num_poses} poses (truncated video?)")
      if next_kept >= len(kept) or index != kept[next_kept]:
        continue
      ok, frame = capture.retrieve()
      if not ok or frame is None or frame.ndim != 3:
        raise release.ReleaseError(
            f"{sequence.video_path}: cannot decode frame {index}")
      if camera is None:
        camera = {
            "name": sequence.camera,
            "f": np.asarray(intrinsics.f, np.float32),
            "c": np.asarray(intrinsics.c, np.float32),
            "k": np.asarray(intrinsics.k, np.float32),
            "p": np.asarray(intrinsics.p, np.float32),
            "image_size": np.array([frame.shape[1], frame.shape[0]], np.int32),
        }
      box = boxes.box(index) if boxes is not None else None
      if box is None:
        box = crops.box_from_points(projected[next_kept], options.box_margin)
        report.box_fallback_frames += 1
      jpeg, crop_box, scale = crops.jpeg_crop(frame, box, size, options.jpeg_quality,
                                              f"{sequence.sequence_id}/{index}")
      pose_2d = (projected[next_kept, _FROM_32] - crop_box[:2]) * scale
      yield index, {
          "image": jpeg,
          "pose_3d": pose_3d[index, _FROM_32].astype(np.float32),
          "pose_2d": pose_2d.astype(np.float32),
          "box": box.astype(np.float32),
          "crop_box": crop_box.astype(np.float32),
          "camera": camera,
          "subject": sequence.subject,
          "action": sequence.action,
          "sequence_id": sequence.sequence_id,
          "frame_index": np.int32(index),
      }
      report.num_examples += 1
      next_kept += 1
  finally:
    capture.release()
    if boxes is not None:
      boxes.close()
  return report


def task_examples(task: tuple[release.Sequence, Options]):
  """sequence_examples(*task): the pool's worker entry point."""
  return (yield from sequence_examples(*task))
