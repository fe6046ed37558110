"""Examples of one HumanEva-I (chunk, camera) sequence, streamed from its video.

Runs in worker processes: imports neither TensorFlow nor tensorflow_datasets, and holds
one decoded frame at a time.
"""

import dataclasses
from collections.abc import Generator

import numpy as np

from . import release

try:
  from data._builder_tools import crops
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import crops

_FROM_15 = list(release.FROM_VP3D_15)
# Bouguet's pixel [0, 0] is the centre of the top-left pixel; ours is its corner.
_TO_EDGE_PX = 0.5


@dataclasses.dataclass(frozen=True)
class Options:
  """How examples are made (from the builder config).

  Attributes:
    image_size: S, side of the stored crops, pixels.
    frame_step: keep poses 0, step, 2 step, ... of each chunk (60 Hz clock).
    jpeg_quality: JPEG quality of the stored crops.
    box_margin: the person box is the projected joints' extent grown by this fraction of
      its longer side on every side.
  """
  image_size: int
  frame_step: int
  jpeg_quality: int
  box_margin: float


@dataclasses.dataclass
class Report:
  """What happened to one sequence, for the end-of-build summary.

  Attributes:
    sequence_id: 'Train/S1/Walking 1 chunk0/C1'.
    num_examples: frames written.
    pose_2d_error_px: mean distance between our projection and VideoPose3D's 2D joints
      over written frames and 15 joints, pixels; None without them.
    joints_outside_image: fraction of projected joints outside the full image.
  """
  sequence_id: str
  num_examples: int = 0
  pose_2d_error_px: float | None = None
  joints_outside_image: float = 0.0


def sequence_examples(
    sequence: release.Sequence, options: Options
) -> Generator[tuple[int, dict], None, Report]:
  """Yields (frame number, example) for the kept frames of one sequence.

  Returns (as the generator's value) the sequence's Report.

  Raises:
    ReleaseError: the video is missing, unreadable or too short, or the joints fall
      behind the camera (a calibration that does not fit the poses).
  """
  report = Report(sequence.sequence_id)
  calibration = sequence.calibration
  pose_cam = calibration.world_to_camera(sequence.poses_world * 1000.0)  # m -> mm.
  if np.any(pose_cam[..., 2] <= 0):
    raise release.ReleaseError(
        f"{calibration.path}: joints of {sequence.sequence_id} lie behind the camera; "
        "does the file map world to camera as X_cam = Rc X + Tc?")
  kept = np.arange(0, sequence.num_frames, options.frame_step)
  bouguet_px = calibration.project(pose_cam[kept])  # (K, 15, 2)
  if sequence.poses_2d is not None and len(sequence.poses_2d) == sequence.num_frames:
    report.pose_2d_error_px = float(np.linalg.norm(
        bouguet_px - sequence.poses_2d[kept], axis=-1).mean())
  projected = bouguet_px + _TO_EDGE_PX
  size = options.image_size
  capture = release.open_video(sequence.video_path)
  camera, outside = None, 0
  try:
    video_index = 0
    for k, offset in enumerate(kept):
      frame_number = sequence.first_frame + int(offset)
      target = sequence.video_frame(frame_number)
      while video_index <= target:
        # grab() decodes without the colour conversion retrieve() adds.
        if not capture.grab():
          raise release.ReleaseError(
              f"{sequence.video_path}: video ended after {video_index} frames but "
              f"{sequence.sequence_id} needs frame {target} (0-based)")
        video_index += 1
      ok, frame = capture.retrieve()
      if not ok or frame is None or frame.ndim != 3:
        raise release.ReleaseError(f"{sequence.video_path}: cannot decode frame {target}")
      height, width = frame.shape[:2]
      if camera is None:
        camera = {
            "name": sequence.camera,
            "f": np.asarray(calibration.f, np.float32),
            "c": np.asarray(calibration.c, np.float32) + _TO_EDGE_PX,
            "k": np.asarray(calibration.k, np.float32),
            "p": np.asarray(calibration.p, np.float32),
            "image_size": np.array([width, height], np.int32),
        }
      points = projected[k]
      outside += int(np.sum((points < 0).any(-1) | (points[:, 0] > width)
                            | (points[:, 1] > height)))
      box = crops.box_from_points(points, options.box_margin)
      jpeg, crop_box, scale = crops.jpeg_crop(frame, box, size, options.jpeg_quality,
                                              sequence.sequence_id)
      yield frame_number, {
          "image": jpeg,
          "pose_3d": pose_cam[offset, _FROM_15].astype(np.float32),
          "pose_2d": ((points[_FROM_15] - crop_box[:2]) * scale).astype(np.float32),
          "box": box.astype(np.float32),
          "crop_box": crop_box.astype(np.float32),
          "camera": camera,
          "subject": sequence.subject,
          "action": sequence.action,
          "sequence_id": sequence.sequence_id,
          "frame_index": np.int32(frame_number),
      }
      report.num_examples += 1
  finally:
    capture.release()
  report.joints_outside_image = outside / max(1, projected.shape[0] * projected.shape[1])
  return report


def task_examples(task: tuple[release.Sequence, Options]):
  """sequence_examples(*task): the pool's worker entry point."""
  return (yield from sequence_examples(*task))
