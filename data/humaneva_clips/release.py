"""HumanEva-I as a user holds it: the release's videos and calibration, VideoPose3D's poses.

Manual dir layout (README.md beside this file):

  data_3d_humaneva15.npz                      3D joints (VideoPose3D's conversion)
  data_2d_humaneva15_detectron_pt_coco.npz    optional: every chunk's length
  data_2d_humaneva15_gt.npz                   optional: 2D joints, a cross-check
  S<k>/Image_Data/<Action>_<trial>_(C<n>).avi 60 Hz colour videos, C1-C3
  S<k>/Calibration_Data/C<n>.cal              camera calibration

VideoPose3D (facebookresearch/VideoPose3D, `data/ConvertHumanEva.m` then
`data/prepare_data_humaneva.py`) ran the HumanEva MATLAB toolbox, which synchronises the
120 Hz mocap with the 60 Hz videos, and stored per frame of the video clock 15 joints in
world coordinates, metres: `positions_3d[<split>/<subject>][<action> <trial> chunk<i>]`
of shape (N, 15, 3), split 'Train' or 'Validate'. Trial 1 of each action is cut at a
fixed frame into a 'Validate' part (first) and a 'Train' part (FRAME_RANGES), and each
part into chunks at frames where the mocap is invalid; invalid chunks are dropped, valid
ones keep their number ('Walking 1 chunk0', 'Walking 1 chunk2').
"""

import dataclasses
import pathlib
import re
from collections.abc import Mapping

import cv2
import numpy as np

try:
  from data._builder_tools import video
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import video

CAMERAS = ("C1", "C2", "C3")  # The colour cameras; BW1-BW4 are greyscale.
SPLITS = ("Train", "Validate")
POSES_3D_FILE = "data_3d_humaneva15.npz"
CHUNK_LENGTHS_FILE = "data_2d_humaneva15_detectron_pt_coco.npz"
POSES_2D_FILE = "data_2d_humaneva15_gt.npz"
VIDEO_DIR = "Image_Data"
CALIBRATION_DIR = "Calibration_Data"

# VideoPose3D's 15 joints (ConvertHumanEva.m, ExtractPose15): 0 pelvis (torsoDistal),
# 1 thorax ((torsoProximal + headProximal) / 2: the neck), 2-4 left shoulder, elbow,
# wrist, 5-7 right shoulder, elbow, wrist, 8-10 left hip, knee, ankle, 11-13 right hip,
# knee, ankle, 14 head (headDistal: the top of the head).
NUM_VP3D_JOINTS = 15
# Indices into those 15 of joints.HUMANEVA_JOINTS (the paper's 14: the pelvis is dropped).
FROM_VP3D_15 = (5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 14, 1)

# Release action names -> canonical names (joints.HUMANEVA_ACTIONS; the other two
# actions keep theirs).
RELEASE_ACTIONS = {"Walking": "Walking", "Jog": "Jogging", "Box": "Boxing",
                   "ThrowCatch": "ThrowCatch", "Gestures": "Gestures"}

# VideoPose3D's `index` (data/prepare_data_humaneva.py): the frames [start, end) of trial
# 1 that each split holds, in 0-based frame numbers of the synchronised 60 Hz clock.
FRAME_RANGES = {
    "Train/S1": {"Walking 1": (590, 1203), "Jog 1": (367, 740),
                 "ThrowCatch 1": (473, 945), "Gestures 1": (395, 801),
                 "Box 1": (385, 789)},
    "Train/S2": {"Walking 1": (438, 876), "Jog 1": (398, 795),
                 "ThrowCatch 1": (550, 1128), "Gestures 1": (500, 901),
                 "Box 1": (382, 734)},
    "Train/S3": {"Walking 1": (448, 939), "Jog 1": (401, 842),
                 "ThrowCatch 1": (493, 1027), "Gestures 1": (533, 1102),
                 "Box 1": (512, 1021)},
    "Validate/S1": {"Walking 1": (5, 590), "Jog 1": (5, 367), "ThrowCatch 1": (5, 473),
                    "Gestures 1": (5, 395), "Box 1": (5, 385)},
    "Validate/S2": {"Walking 1": (5, 438), "Jog 1": (5, 398), "ThrowCatch 1": (5, 550),
                    "Gestures 1": (5, 500), "Box 1": (5, 382)},
    "Validate/S3": {"Walking 1": (5, 448), "Jog 1": (5, 401), "ThrowCatch 1": (5, 493),
                    "Gestures 1": (5, 533), "Box 1": (5, 512)},
}

# VideoPose3D's `sync_data`: per subject and trial, one offset per camera C1, C2, C3.
# Frame number n of the poses is video frame n + offset - 1 (0-based), the mapping
# VideoPose3D used to align 2D detections on the videos with the poses.
SYNC_OFFSETS = {
    "S1": {"Walking 1": (82, 81, 82), "Jog 1": (51, 51, 50), "ThrowCatch 1": (61, 61, 60),
           "Gestures 1": (45, 45, 44), "Box 1": (57, 57, 56)},
    "S2": {"Walking 1": (115, 115, 114), "Jog 1": (100, 100, 99),
           "ThrowCatch 1": (127, 127, 127), "Gestures 1": (122, 122, 121),
           "Box 1": (119, 119, 117)},
    "S3": {"Walking 1": (80, 80, 80), "Jog 1": (65, 65, 65), "ThrowCatch 1": (79, 79, 79),
           "Gestures 1": (83, 83, 82), "Box 1": (1, 1, 1)},
}

# Camera centres in world coordinates, mm: the `translation` of VideoPose3D's
# `humaneva_cameras_extrinsic_params` (common/humaneva_dataset.py), which it uses as
# X_cam = R^-1 (X_world - translation). Only a cross-check of the .cal files here.
CAMERA_CENTRES = {
    "S1": {"C1": (4062.227, 663.2477, 1528.397), "C2": (844.8131, -3805.2092, 1504.9929),
           "C3": (-797.67377, 3916.3174, 1433.6602)},
    "S2": {"C1": (4112.9121, 626.4929, 1545.2988), "C2": (923.5740, -3877.9243, 1504.5518),
           "C3": (-781.4915, 3838.8853, 1444.9929)},
    "S3": {"C1": (4062.2271, 663.2477, 1528.3970), "C2": (844.8131, -3805.2092, 1504.9929),
           "C3": (-797.6738, 3916.3174, 1433.6602)},
}

_CHUNK = re.compile(r"^(\w+) (\d+) chunk(\d+)$")


class ReleaseError(RuntimeError):
  """A required file is missing, unreadable or inconsistent with the others."""


def split_trial(trial: str) -> tuple[str, str]:
  """'Jog 1' -> ('Jogging', '1'); raises ValueError on an unknown action."""
  action, _, number = trial.partition(" ")
  if action not in RELEASE_ACTIONS or not number.isdigit():
    raise ValueError(f"unknown HumanEva-I trial {trial!r}; actions: "
                     f"{sorted(RELEASE_ACTIONS)}")
  return RELEASE_ACTIONS[action], number


def parse_chunk(name: str) -> tuple[str, int]:
  """'Walking 1 chunk2' -> ('Walking 1', 2); raises ValueError otherwise."""
  match = _CHUNK.match(name)
  if not match:
    raise ValueError(f"{name!r} is not '<Action> <trial> chunk<i>'")
  return f"{match[1]} {match[2]}", int(match[3])


def video_name(trial: str, camera: str) -> str:
  """'Walking 1', 'C2' -> 'Walking_1_(C2).avi', the release's spelling."""
  return f"{trial.replace(' ', '_')}_({camera}).avi"


@dataclasses.dataclass(frozen=True)
class Calibration:
  """One camera of one subject, from its `.cal` file.

  The file holds 22 numbers, one per line, in the order of Bouguet's camera calibration
  toolbox (with which HumanEva calibrated): fc (2), cc (2), alpha_c (1), kc (5), Rc (3x3,
  row by row), Tc (3). A world point X (mm) is X_cam = Rc X + Tc in the camera frame (x
  right, y down, z forward, mm); with x = X_cam/Z_cam, y = Y_cam/Z_cam, r2 = x^2 + y^2,
  radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3 and (k1, k2, p1, p2, k3) = kc:
  x_d = radial x + 2 p1 x y + p2 (r2 + 2 x^2), y_d = radial y + p1 (r2 + 2 y^2) + 2 p2 x y,
  pixel = (fx (x_d + alpha_c y_d) + cx, fy y_d + cy) with [0, 0] the centre of the
  top-left pixel (Bouguet's convention).

  Attributes:
    f: (fx, fy), pixels.
    c: (cx, cy), pixels, Bouguet's convention.
    alpha: skew alpha_c.
    k: (k1, k2, k3) radial distortion.
    p: (p1, p2) tangential distortion, Bouguet's (and OpenCV's) model.
    rotation: Rc, 3x3 nested tuples.
    translation: Tc, mm.
    path: the file read.
  """
  f: tuple[float, float]
  c: tuple[float, float]
  alpha: float
  k: tuple[float, float, float]
  p: tuple[float, float]
  rotation: tuple[tuple[float, ...], ...]
  translation: tuple[float, float, float]
  path: str = ""

  @property
  def centre(self) -> np.ndarray:
    """(3,) the camera's position in world coordinates, mm."""
    r = np.asarray(self.rotation)
    return -r.T @ np.asarray(self.translation)

  def world_to_camera(self, points_mm: np.ndarray) -> np.ndarray:
    """(..., 3) world mm -> (..., 3) camera frame mm."""
    r = np.asarray(self.rotation)
    return np.asarray(points_mm, np.float64) @ r.T + np.asarray(self.translation)

  def project(self, points_cam: np.ndarray) -> np.ndarray:
    """(..., 3) camera frame mm -> (..., 2) pixels, Bouguet's convention (see above)."""
    points_cam = np.asarray(points_cam, np.float64)
    x = points_cam[..., 0] / points_cam[..., 2]
    y = points_cam[..., 1] / points_cam[..., 2]
    k1, k2, k3 = self.k
    p1, p2 = self.p
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = radial * x + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = radial * y + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([self.f[0] * (xd + self.alpha * yd) + self.c[0],
                     self.f[1] * yd + self.c[1]], axis=-1)


def read_calibration(path: pathlib.Path) -> Calibration:
  """Reads a release `.cal` file (Calibration's docstring); errors name the file."""
  if not path.is_file():
    raise ReleaseError(f"missing calibration file {path}")
  try:
    values = [float(v) for v in path.read_text().split()]
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise ReleaseError(f"{path}: unreadable calibration file ({e})") from e
  if len(values) != 22 or not np.all(np.isfinite(values)):
    raise ReleaseError(f"{path}: expected 22 finite numbers (fc 2, cc 2, alpha_c 1, kc 5, "
                       f"Rc 9, Tc 3), found {len(values)}")
  rotation = np.reshape(values[10:19], (3, 3))
  if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-3:
    raise ReleaseError(f"{path}: Rc (numbers 11-19) is not a rotation matrix")
  kc = values[5:10]
  return Calibration(f=tuple(values[0:2]), c=tuple(values[2:4]), alpha=values[4],
                     k=(kc[0], kc[1], kc[4]), p=(kc[2], kc[3]),
                     rotation=tuple(map(tuple, rotation)),
                     translation=tuple(values[19:22]), path=str(path))


def load_npz_dict(path: pathlib.Path, key: str) -> dict:
  """`np.load(path)[key]` as the nested dict VideoPose3D pickled into it.

  The arrays are pickled Python objects: load files from sources you trust.
  """
  if not path.is_file():
    raise ReleaseError(f"missing {path}")
  try:
    with np.load(path, allow_pickle=True) as npz:
      if key not in npz.files:
        raise ReleaseError(f"{path}: no '{key}' array (found {npz.files}); is it "
                           "VideoPose3D's HumanEva file?")
      value = npz[key]
      value = value.item() if value.dtype == object and value.shape == () else value
  except ReleaseError:
    raise
  except Exception as e:  # Truncated zip, bad pickle: many kinds.
    raise ReleaseError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
  if not isinstance(value, dict):
    raise ReleaseError(f"{path}: '{key}' holds {type(value).__name__}, expected a dict "
                       "subject -> action -> data")
  return value


def check_poses_3d(path: pathlib.Path, poses: dict, keys: list[str]) -> None:
  """Checks the subjects and arrays of positions_3d that the build reads."""
  for key in keys:
    if key not in poses:
      raise ReleaseError(f"{path}: no subject '{key}' in positions_3d (found "
                         f"{sorted(poses)})")
    for name, array in poses[key].items():
      array = np.asarray(array)
      if array.ndim != 3 or array.shape[1:] != (NUM_VP3D_JOINTS, 3) or not len(array):
        raise ReleaseError(f"{path}: positions_3d['{key}']['{name}'] has shape "
                           f"{array.shape}, expected (N, 15, 3)")
      if not np.all(np.isfinite(array)):
        raise ReleaseError(f"{path}: positions_3d['{key}']['{name}'] holds non-finite "
                           "values")


def chunk_lengths(path: pathlib.Path, positions_2d: dict) -> dict:
  """Every chunk's length, valid or not, from a VideoPose3D 2D file with 'Unlabeled/' keys.

  VideoPose3D's 2D detection files (e.g. data_2d_humaneva15_detectron_pt_coco.npz) hold,
  besides the valid chunks under '<split>/<subject>', the invalid ones under
  'Unlabeled/<split>/<subject>', one array per camera (None where missing).

  Returns:
    {(split, subject, trial): {chunk number: frames}}.
  """
  lengths = {}
  for key, chunks in positions_2d.items():
    parts = key.split("/")
    if parts[0] == "Unlabeled":
      parts = parts[1:]
    if len(parts) != 2 or parts[0] not in SPLITS:
      continue  # 'Unlabeled/S1': other trials, not cut into chunks.
    for name, cameras in chunks.items():
      try:
        trial, number = parse_chunk(name)
      except ValueError:
        continue
      sizes = {len(c) for c in cameras if c is not None}
      if len(sizes) != 1:
        raise ReleaseError(f"{path}: ['{key}']['{name}'] has per-camera lengths {sizes}")
      lengths.setdefault((parts[0], parts[1], trial), {})[number] = sizes.pop()
  return lengths


def place_chunks(frame_range: tuple[int, int], stored: Mapping[int, int],
                 all_lengths: Mapping[int, int] | None, where: str) -> dict[int, int]:
  """First frame number of each stored chunk of one trial's split.

  Chunks tile [start, end) in order. The 3D file lacks the invalid chunks, so a stored
  chunk can be placed only when every chunk before it is known: from the 3D file alone up
  to the first missing number, or from `all_lengths` (chunk_lengths) for all of them.

  Args:
    frame_range: (start, end), frame numbers.
    stored: {chunk number: frames} of the chunks in the 3D file.
    all_lengths: {chunk number: frames} of every chunk, or None.
    where: names the trial and files in errors.

  Returns:
    {chunk number: first frame number} of the chunks that could be placed.

  Raises:
    ReleaseError: the lengths contradict each other or the frame range.
  """
  start, end = frame_range
  if sum(stored.values()) > end - start:
    raise ReleaseError(f"{where}: chunks hold {sum(stored.values())} frames, more than "
                       f"the {end - start} of frames [{start}, {end})")
  if all_lengths is not None:
    numbers = sorted(all_lengths)
    total = sum(all_lengths.values())
    if numbers != list(range(len(numbers))) or total != end - start:
      raise ReleaseError(f"{where}: chunks {numbers} of {total} frames do not tile frames "
                         f"[{start}, {end})")
    for number, frames in stored.items():
      if all_lengths.get(number) != frames:
        raise ReleaseError(f"{where}: chunk{number} has {frames} 3D frames but "
                           f"{all_lengths.get(number)} in the chunk-length file")
    lengths = all_lengths
  else:
    lengths = stored
  placed, first = {}, start
  for number in range(max(stored) + 1):
    if number not in lengths:
      break  # An invalid chunk of unknown length: later chunks cannot be placed.
    if number in stored:
      placed[number] = first
    first += lengths[number]
  return placed


@dataclasses.dataclass(frozen=True)
class Sequence:
  """One valid chunk seen by one camera: the unit the builder writes as a shard.

  Attributes:
    split: 'Train' or 'Validate'.
    subject: 'S1'.
    trial: 'Walking 1'.
    chunk: chunk number.
    camera: 'C1'.
    first_frame: frame number of the chunk's first pose (60 Hz clock).
    poses_world: (N, 15, 3) VideoPose3D joints, world coordinates, metres.
    calibration: the camera.
    sync_offset: frame number n is video frame n + sync_offset - 1.
    video_path: the trial's video of this camera.
    poses_2d: (N, 15, 2) VideoPose3D's projected 2D joints (Bouguet pixels), or None.
  """
  split: str
  subject: str
  trial: str
  chunk: int
  camera: str
  first_frame: int
  poses_world: np.ndarray
  calibration: Calibration
  sync_offset: int
  video_path: pathlib.Path
  poses_2d: np.ndarray | None = None

  @property
  def sequence_id(self) -> str:
    return f"{self.split}/{self.subject}/{self.trial} chunk{self.chunk}/{self.camera}"

  @property
  def action(self) -> str:
    return split_trial(self.trial)[0]

  @property
  def num_frames(self) -> int:
    return len(self.poses_world)

  def video_frame(self, frame_number: int) -> int:
    """The 0-based video frame showing pose frame number `frame_number`."""
    return frame_number + self.sync_offset - 1


def open_video(path: pathlib.Path) -> cv2.VideoCapture:
  """Opens a video for streaming; raises ReleaseError naming it if it cannot."""
  return video.open_video(path, ReleaseError)


def check_video(sequence: Sequence) -> None:
  """Fails fast on a missing, unopenable or (by its header) too short video."""
  last = sequence.video_frame(sequence.first_frame + sequence.num_frames - 1)
  if sequence.video_frame(sequence.first_frame) < 0:
    raise ReleaseError(f"{sequence.sequence_id}: sync offset {sequence.sync_offset} puts "
                       f"frame {sequence.first_frame} before the start of "
                       f"{sequence.video_path}")
  capture = open_video(sequence.video_path)
  try:
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  finally:
    capture.release()
  if 0 < num_frames <= last:
    raise ReleaseError(f"{sequence.video_path}: video has {num_frames} frames but "
                       f"{sequence.sequence_id} needs frame {last} (0-based)")


def to_paper_joints(poses_15: np.ndarray) -> np.ndarray:
  """(..., 15, D) VideoPose3D joints -> (..., 14, D) in joints.HUMANEVA_JOINTS order."""
  return poses_15[..., list(FROM_VP3D_15), :]


def find_sequences(
    manual_dir: pathlib.Path, split: str, subjects: tuple[str, ...],
    actions: tuple[str, ...], cameras: tuple[str, ...], poses_3d: dict, *,
    frame_ranges: Mapping, sync_offsets: Mapping,
    all_chunk_lengths: dict | None = None, poses_2d: dict | None = None,
) -> tuple[list[Sequence], list[str]]:
  """The (chunk, camera) sequences of one split, and the chunks that cannot be placed.

  Args:
    manual_dir: the folder holding the npz files and S1/, S2/, ...
    split: 'Train' or 'Validate'.
    subjects: e.g. ('S1', 'S2', 'S3').
    actions: canonical actions to keep, e.g. joints.HUMANEVA_ACTIONS.
    cameras: e.g. CAMERAS.
    poses_3d: positions_3d of the 3D file.
    frame_ranges: like FRAME_RANGES.
    sync_offsets: like SYNC_OFFSETS.
    all_chunk_lengths: chunk_lengths() of the optional chunk-length file, or None.
    poses_2d: positions_2d of the optional 2D ground-truth file, or None.

  Returns:
    The sequences by subject, trial, chunk, camera; and '<split>/<subject>/<chunk name>'
    of every chunk left out because its first frame is unknown.
  """
  path_3d = manual_dir / POSES_3D_FILE
  keys = [f"{split}/{subject}" for subject in subjects]
  check_poses_3d(path_3d, poses_3d, keys)
  sequences, unplaced = [], []
  calibrations = {}
  for subject, key in zip(subjects, keys):
    trials = {}
    for name, array in poses_3d[key].items():
      try:
        trial, number = parse_chunk(name)
        action = split_trial(trial)[0]
      except ValueError as e:
        raise ReleaseError(f"{path_3d}: positions_3d['{key}']: {e}") from e
      if action in actions:
        trials.setdefault(trial, {})[number] = np.asarray(array)
    if not trials:
      raise ReleaseError(f"{path_3d}: positions_3d['{key}'] holds no chunk of {actions}")
    for trial in sorted(trials):
      chunks = trials[trial]
      where = f"{path_3d} ['{key}']['{trial}']"
      if trial not in frame_ranges.get(key, {}) or trial not in sync_offsets.get(
          subject, {}):
        raise ReleaseError(f"{where}: no frame range or sync offsets for this trial")
      lengths = None
      if all_chunk_lengths is not None:
        lengths = all_chunk_lengths.get((split, subject, trial))
        where += f" and {CHUNK_LENGTHS_FILE}" if lengths is not None else ""
      placed = place_chunks(frame_ranges[key][trial],
                            {n: len(a) for n, a in chunks.items()}, lengths, where)
      unplaced += [f"{key}/{trial} chunk{n}" for n in sorted(set(chunks) - set(placed))]
      for number in sorted(placed):
        name = f"{trial} chunk{number}"
        for camera in cameras:
          if (subject, camera) not in calibrations:
            calibrations[subject, camera] = read_calibration(
                manual_dir / subject / CALIBRATION_DIR / f"{camera}.cal")
          reference = None
          if poses_2d is not None and name in poses_2d.get(key, {}):
            reference = poses_2d[key][name][CAMERAS.index(camera)]
            reference = None if reference is None else np.asarray(reference)
          sequences.append(Sequence(
              split=split, subject=subject, trial=trial, chunk=number, camera=camera,
              first_frame=placed[number], poses_world=chunks[number],
              calibration=calibrations[subject, camera],
              sync_offset=sync_offsets[subject][trial][CAMERAS.index(camera)],
              video_path=manual_dir / subject / VIDEO_DIR / video_name(trial, camera),
              poses_2d=reference))
  return sequences, unplaced
