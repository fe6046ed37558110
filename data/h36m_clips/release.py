"""The Human3.6M release as extracted on disk: layout, action names, file readers.

Per subject `S<k>/` of the manual dir:
  MyPoseFeatures/D3_Positions_mono/<Action>.<camera>.cdf   3D joints, camera frame, mm
  MyPoseFeatures/D2_Positions/<Action>.<camera>.cdf        2D joints, pixels (optional)
  Videos/<Action>.<camera>.mp4                             50 fps video
  MySegmentsMat/ground_truth_bb/<Action>.<camera>.mat      person box masks (optional)
The 3D pose files define the sequences; every one needs its video.
"""

import dataclasses
import pathlib
import re

from absl import logging
import cdflib
import cv2
import h5py
import numpy as np

from rpsm_jax import joints

try:
  from data._builder_tools import video
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import video

CAMERA_SERIALS = ("54138969", "55011271", "58860488", "60457274")
NUM_RAW_JOINTS = 32

# Release spellings (subject S1 uses the first) -> canonical action names.
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
_SUB_ACTION = re.compile(r"^(.*?)(?: (\d+))?$")

# Videos usually hold a few frames more than their pose files; more is worth a warning.
_USUAL_EXTRA_FRAMES = 10

POSE_3D_DIR = "MyPoseFeatures/D3_Positions_mono"
POSE_2D_DIR = "MyPoseFeatures/D2_Positions"
VIDEO_DIR = "Videos"
BOX_DIR = "MySegmentsMat/ground_truth_bb"


class ReleaseError(RuntimeError):
  """A required file of the release is missing, truncated or unreadable."""


def split_action(release_action: str) -> tuple[str, str]:
  """'WalkingDog 1' -> ('WalkDog', '1'); 'Directions' -> ('Directions', '').

  Raises:
    ValueError: the name is not one of the 15 actions in any release spelling.
  """
  base, number = _SUB_ACTION.match(release_action.strip()).groups()
  base = _ACTION_ALIASES.get(base, base)
  if base not in joints.H36M_ACTIONS:
    raise ValueError(f"unknown Human3.6M action {release_action!r}")
  return base, number or ""


def canonical_action(release_action: str) -> str:
  """The canonical action (joints.H36M_ACTIONS) of a release file's action name."""
  return split_action(release_action)[0]


@dataclasses.dataclass(frozen=True)
class Sequence:
  """One (subject, release action, camera) recording.

  Attributes:
    subject: 'S1'.
    release_action: the action as the release's file names spell it, 'Directions 1'.
    camera: camera serial, '54138969'.
    subject_dir: the subject's folder in the manual dir.
  """
  subject: str
  release_action: str
  camera: str
  subject_dir: pathlib.Path

  @property
  def sequence_id(self) -> str:
    return f"{self.subject}/{self.release_action}/{self.camera}"

  @property
  def action(self) -> str:
    return canonical_action(self.release_action)

  def _path(self, folder: str, suffix: str) -> pathlib.Path:
    return self.subject_dir / folder / f"{self.release_action}.{self.camera}{suffix}"

  @property
  def pose_3d_path(self) -> pathlib.Path:
    return self._path(POSE_3D_DIR, ".cdf")

  @property
  def pose_2d_path(self) -> pathlib.Path:
    return self._path(POSE_2D_DIR, ".cdf")

  @property
  def video_path(self) -> pathlib.Path:
    return self._path(VIDEO_DIR, ".mp4")

  @property
  def expected_box_path(self) -> pathlib.Path:
    return self._path(BOX_DIR, ".mat")

  def box_path(self) -> tuple[pathlib.Path | None, bool]:
    """The box-mask file and whether it was found under another spelling.

    Some release files spell the action differently from the video (e.g.
    'WalkDog 1' vs 'WalkingDog 1'); a file whose canonical action, sub-action and
    camera all match is taken when exactly one exists.
    """
    exact = self.expected_box_path
    if exact.is_file():
      return exact, False
    want = (split_action(self.release_action), self.camera)
    matches = []
    for path in sorted((self.subject_dir / BOX_DIR).glob(f"*.{self.camera}.mat")):
      try:
        if (split_action(path.name.rsplit(".", 2)[0]), self.camera) == want:
          matches.append(path)
      except ValueError:
        continue
    return (matches[0], True) if len(matches) == 1 else (None, False)


def find_sequences(manual_dir: pathlib.Path, subjects: tuple[str, ...],
                   skip: tuple[str, ...] = ()) -> list[Sequence]:
  """Lists the sequences of `subjects` from their 3D pose files, sorted.

  Args:
    manual_dir: the folder holding S1/, S5/, ...
    subjects: subjects to list, in order.
    skip: 'S11/Directions' skips that release action on all cameras,
      'S11/Directions/54138969' one camera.

  Returns:
    The sequences, by subject (in the given order), release action, camera.

  Raises:
    ReleaseError: a subject's pose folder is missing or a file name is not
      '<Action>.<camera serial>.cdf'.
  """
  found = []
  for subject in subjects:
    pose_dir = manual_dir / subject / POSE_3D_DIR
    if not pose_dir.is_dir():
      raise ReleaseError(f"missing folder {pose_dir} (subject {subject}); see the "
                         "manual download instructions")
    for path in sorted(pose_dir.glob("*.cdf")):
      action, _, camera = path.name[:-len(".cdf")].rpartition(".")
      if action.startswith("_"):  # '_ALL' files hold no single action.
        logging.info("Ignoring %s", path)
        continue
      if camera not in CAMERA_SERIALS:
        raise ReleaseError(f"{path}: expected '<Action>.<camera serial>.cdf' with a "
                           f"serial in {CAMERA_SERIALS}")
      try:
        split_action(action)
      except ValueError as e:
        raise ReleaseError(f"{path}: {e}") from e
      if f"{subject}/{action}" in skip or f"{subject}/{action}/{camera}" in skip:
        logging.info("Skipping %s (skip_sequences)", path)
        continue
      found.append(Sequence(subject, action, camera, manual_dir / subject))
    if not any(s.subject == subject for s in found):
      raise ReleaseError(f"no pose files in {pose_dir}")
  return found


def read_poses(path: pathlib.Path, width: int) -> np.ndarray:
  """Reads the variable 'Pose' (1, N, width) of a release CDF file.

  Returns:
    (N, width) float64.

  Raises:
    ReleaseError: missing, unreadable, wrongly shaped or non-finite.
  """
  if not path.is_file():
    raise ReleaseError(f"missing pose file {path}")
  try:
    pose = np.asarray(cdflib.CDF(str(path)).varget("Pose"), np.float64)
  except Exception as e:  # cdflib raises many kinds on damaged files.
    raise ReleaseError(
        f"{path}: unreadable CDF pose file ({type(e).__name__}: {e})") from e
  if pose.ndim == 3 and pose.shape[0] == 1:
    pose = pose[0]
  if pose.ndim != 2 or pose.shape[1] != width or not pose.shape[0]:
    raise ReleaseError(f"{path}: 'Pose' has shape {pose.shape}, expected "
                       f"(1, N, {width})")
  if not np.all(np.isfinite(pose)):
    raise ReleaseError(f"{path}: 'Pose' holds non-finite values")
  return pose


def open_video(path: pathlib.Path) -> cv2.VideoCapture:
  """Opens a video for streaming; raises ReleaseError naming it if it cannot."""
  return video.open_video(path, ReleaseError)


def check_sequence(sequence: Sequence) -> int:
  """Fails fast on a sequence's required files; returns its number of poses.

  Streaming finds truncation the container metadata hides; this catches missing
  files, bad CDFs, unopenable videos and videos whose header is already too short.
  """
  num_poses = len(read_poses(sequence.pose_3d_path, NUM_RAW_JOINTS * 3))
  capture = open_video(sequence.video_path)
  try:
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  finally:
    capture.release()
  if 0 < num_frames < num_poses:
    raise ReleaseError(
        f"{sequence.video_path}: video has {num_frames} frames but "
        f"{sequence.pose_3d_path} has {num_poses} poses")
  if num_frames > num_poses + _USUAL_EXTRA_FRAMES:
    # E.g. S9 'Greeting 2': poses for about half the video; the first frames are used.
    logging.warning("%s: %d frames for %d poses; using the first %d frames",
                    sequence.video_path, num_frames, num_poses, num_poses)
  return num_poses


class MaskBoxes:
  """Person boxes from a ground_truth_bb file (MATLAB v7.3, i.e. HDF5).

  'Masks' is (N, 1) object references, one per frame, each to a binary mask that
  MATLAB stored column-major, so h5py reads it as (width, height).
  """

  def __init__(self, path: pathlib.Path):
    """Raises OSError/KeyError/ValueError when the file is damaged."""
    self._file = h5py.File(path, "r")
    try:
      refs = self._file["Masks"]
      if refs.dtype != h5py.ref_dtype or refs.ndim != 2 or 1 not in refs.shape:
        raise ValueError(f"'Masks' is {refs.dtype} {refs.shape}, expected (N, 1) "
                         "object references")
      self._refs = refs[()].reshape(-1)
    except BaseException:
      self._file.close()
      raise

  def __len__(self) -> int:
    return len(self._refs)

  def box(self, index: int) -> np.ndarray | None:
    """[x0, y0, x1, y1] (x1, y1 exclusive) of frame `index`'s mask, full-image px.

    None when the frame has no mask, an empty one, or a broken reference.
    """
    if index >= len(self._refs):
      return None
    try:
      mask = self._file[self._refs[index]][()].T  # (height, width)
    except Exception:  # Broken reference: h5py raises several kinds.
      return None
    if mask.ndim != 2:
      return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
      return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)

  def close(self) -> None:
    self._file.close()
