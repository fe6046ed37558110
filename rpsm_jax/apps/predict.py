r"""Inference on a video or a folder of frames: 3D poses (npz, JSON) and an animation.

  python -m rpsm_jax.predict --workdir=<trained run> --input=<video or folder of frames> \
      --output=<dir> [--boxes=<per-frame person boxes>] [--checkpoint_step=N | --best] \
      [--stages=all|last] [--max_frames=N] [--streaming] [--animation=mp4|gif|none]

Frames are read one at a time (videos with cv2.VideoCapture; folders as the image files
in natural sort order, frame_2 before frame_10), converted to RGB, cropped around the
person and resized to the run's input size, then run through the model as evaluation does:
non-overlapping clips of config.clip_length frames, the LSTM state reset for every clip
(the last clip padded by repeating its final frame). --streaming carries the LSTM state
across clips instead, the model then sees the video as one long causal sequence.

Crops. With --boxes, each frame's box [x0, y0, x1, y1] (pixels of that frame; pixel j spans
[j, j + 1]) has its short side grown to a square about its centre, no margin, zero-padded
where it leaves the image: the crop the authors trained on. Without boxes the largest
centred square of each frame is used, which only works when the person fills the frame's
middle; the log and poses.json say which crop was used.

Boxes file, one row per input frame (the first N rows with --max_frames):
  .json  [[x0, y0, x1, y1], ...] or {"boxes": [[x0, y0, x1, y1], ...]}
  .csv   one "x0,y0,x1,y1" line per frame (commas or spaces); an optional header line and
         lines starting with '#' are skipped
  .npy   a float array of shape (N, 4)

Outputs in --output:
  poses.npz   poses_mm (F, K', P, 3) float32 for the F frames and the K' stages written
              (all K, or the last with --stages=last), stages (K',) 1-based, crop_boxes
              (F, 4), person_boxes (F, 4) (NaN without --boxes), frame_index (F,),
              joint_names (P,), parents (P,), checkpoint_step
  poses.json  metadata (units, coordinates, joint names in order, crop, checkpoint, ...)
              and, per frame, the crop box and each stage's pose
  poses.mp4   (or poses.gif) the input frame with its crop beside the 3D skeleton of each
              stage (--stages=all) or of the final stage (--stages=last)
Poses are in mm, root-relative (joint 0, the pelvis, at 0) in the camera frame: x right,
y down, z away from the camera.
"""

import json
import os
import re
from typing import Iterator, Optional

from absl import app
from absl import flags
from absl import logging
import cv2

import jax
import numpy as np
from PIL import Image
import tqdm

from rpsm_jax import crops
from rpsm_jax import poses
from rpsm_jax import logs
from rpsm_jax.apps import inference
from rpsm_jax.evaluation import visualize
from rpsm_jax.cpu import xla_cpu

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
COORDINATES = ("camera frame, root-relative: x right, y down, z away from the camera; "
               "the root joint at 0")

FLAGS = flags.FLAGS

class InputError(ValueError):
  """An input, boxes file or workdir that cannot be used; the message names the file."""


# --------------------------------------------------------------------------- frames


class VideoFrames:
  """Frames of a video file, decoded one at a time (RGB uint8)."""

  def __init__(self, path: str):
    _check_readable_file(path, "video")
    self.path = path
    self._capture = cv2.VideoCapture(path)
    if not self._capture.isOpened():
      raise InputError(f"cannot open video {path}: corrupt, or a format OpenCV cannot "
                       "decode")
    self.fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or None
    count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
    self.count = count if count > 0 else None   # containers only estimate it
    self.kind = "video"

  def __iter__(self) -> Iterator[np.ndarray]:
    index = 0
    try:
      while True:
        ok, frame = self._capture.read()
        if not ok or frame is None:
          break
        index += 1
        yield _to_rgb(frame)
    finally:
      self._capture.release()
    if index == 0:
      raise InputError(f"no frame could be decoded from video {self.path}: empty or "
                       "corrupt")
    if self.count and index != self.count:
      logging.warning("%s: decoded %d frames, the container announced %d", self.path,
                      index, self.count)


class FolderFrames:
  """Image files of a folder in natural sort order (frame_2 before frame_10), RGB uint8."""

  def __init__(self, path: str):
    if not os.access(path, os.R_OK | os.X_OK):
      raise InputError(f"cannot read folder {path}: permission denied")
    names = [n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
             and not n.startswith(".")]
    if not names:
      raise InputError(f"folder {path} holds no image files "
                       f"({', '.join(IMAGE_EXTENSIONS)})")
    self.files = [os.path.join(path, n) for n in sorted(names, key=_natural_key)]
    self.path, self.count, self.fps, self.kind = path, len(self.files), None, "folder"

  def __iter__(self) -> Iterator[np.ndarray]:
    for f in self.files:
      _check_readable_file(f, "image")
      frame = cv2.imread(f, cv2.IMREAD_COLOR)
      if frame is None:
        raise InputError(f"cannot decode image {f}: corrupt or not an image")
      yield _to_rgb(frame)


def open_frames(path: str):
  """A VideoFrames or FolderFrames for `path`; raises InputError naming a bad input."""
  if not os.path.exists(path):
    raise InputError(f"input {path} does not exist")
  return FolderFrames(path) if os.path.isdir(path) else VideoFrames(path)


def _check_readable_file(path: str, what: str) -> None:
  if not os.path.isfile(path):
    raise InputError(f"{what} {path} is not a file")
  if not os.access(path, os.R_OK):
    raise InputError(f"cannot read {what} {path}: permission denied")
  if os.path.getsize(path) == 0:
    raise InputError(f"{what} {path} is empty (0 bytes)")


def _to_rgb(frame: np.ndarray) -> np.ndarray:
  if frame.dtype != np.uint8:  # 16-bit frames: keep the high byte
    frame = (frame >> 8).astype(np.uint8) if frame.dtype == np.uint16 else \
        np.clip(frame, 0, 255).astype(np.uint8)
  if frame.ndim == 2:
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
  return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _natural_key(name: str):
  return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------- boxes


def load_boxes(path: str) -> np.ndarray:
  """Reads a boxes file (.json, .csv or .npy; see the module doc) -> (N, 4) float64.

  Raises InputError naming the file (and the row) for a missing, unparsable or empty file,
  a wrong shape, non-finite values or boxes with x1 <= x0 or y1 <= y0.
  """
  if not os.path.isfile(path):
    raise InputError(f"boxes file {path} does not exist")
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == ".json":
      with open(path) as f:
        data = json.load(f)
      if isinstance(data, dict):
        if "boxes" not in data:
          raise InputError(f"boxes file {path}: a JSON object needs a 'boxes' list")
        data = data["boxes"]
      boxes = np.asarray(data, np.float64)
    elif ext in (".csv", ".txt"):
      boxes = _read_csv(path)
    elif ext == ".npy":
      boxes = np.asarray(np.load(path, allow_pickle=False), np.float64)
    else:
      raise InputError(f"boxes file {path}: unknown format {ext!r} (use .json, .csv or "
                       ".npy)")
  except InputError:
    raise
  except (ValueError, TypeError, OSError) as e:
    raise InputError(f"cannot parse boxes file {path}: {e}") from e
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise InputError(f"boxes file {path}: expected one [x0, y0, x1, y1] per frame, i.e. "
                     f"shape (N, 4), got shape {boxes.shape}")
  if not len(boxes):
    raise InputError(f"boxes file {path} holds no box")
  bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
  if bad.size:
    raise InputError(f"boxes file {path}: non-finite values in rows {bad[:5].tolist()} "
                     "(frames without a detection need a box too)")
  bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
  if bad.size:
    raise InputError(f"boxes file {path}: rows {bad[:5].tolist()} have x1 <= x0 or "
                     f"y1 <= y0 (first: {boxes[bad[0]].tolist()}); boxes are "
                     "[x0, y0, x1, y1]")
  return boxes


def _read_csv(path: str) -> np.ndarray:
  rows = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      fields = [v for v in re.split(r"[,\s;]+", line) if v]
      try:
        rows.append([float(v) for v in fields])
      except ValueError:
        if rows:  # only the first row may be a header
          raise InputError(f"boxes file {path}, line {number}: not numbers: {line!r}")
        continue
      if len(rows[-1]) != 4:
        raise InputError(f"boxes file {path}, line {number}: expected 4 values "
                         f"x0,y0,x1,y1, got {len(rows[-1])}")
  return np.asarray(rows, np.float64).reshape(-1, 4)


# --------------------------------------------------------------------------- prediction


def predict(run: inference.Run, input_path: str, output: str,
            boxes_path: Optional[str] = None, stages: str = "all",
            max_frames: Optional[int] = None, streaming: bool = False,
            animation: str = "mp4", fps: Optional[float] = None,
            panel_size: int = 256) -> dict:
  """Runs `run`'s model over a video or folder of frames and writes the outputs.

  Args: as the command-line flags of this module.

  Returns:
    The metadata written to poses.json (with 'outputs': the files written).
  """
  source = open_frames(input_path)
  boxes = load_boxes(boxes_path) if boxes_path else None
  if max_frames is not None and max_frames < 1:
    raise InputError(f"--max_frames must be >= 1, got {max_frames}")
  if boxes is not None and source.kind == "folder":  # a folder's frame count is exact
    _check_box_count(boxes, boxes_path, input_path, source.count, max_frames)
  config = run.config
  size, clip_length = config.model.input_size, config.clip_length
  k = config.model.num_stages
  stage_ids = list(range(1, k + 1)) if stages == "all" else [k]
  crop_kind = "boxes_file" if boxes is not None else "centre_square"
  if boxes is None:
    logging.warning("No --boxes given: cropping the largest centred square of every frame. "
                    "Give per-frame person boxes for the crop the model was trained on.")
  else:
    logging.info("Cropping around the %d person boxes of %s (short side grown to a "
                 "square)", len(boxes), boxes_path)
  os.makedirs(output, exist_ok=True)

  run_clip = _ClipRunner(run, streaming)
  fps = fps or source.fps or 10.0
  writer = _AnimationWriter(os.path.join(output, f"poses.{animation}"), fps, panel_size) \
      if animation != "none" else None
  names, parents = run.joint_names, run.parents
  total = source.count
  if max_frames:
    total = min(total, max_frames) if total else max_frames
  poses_out, crop_boxes, person_boxes = [], [], []
  pending = []   # (frame, crop box, person box, crop) of the clip being filled
  first_shape = None

  def flush():
    out = run_clip(np.stack([p[3] for p in pending]))[np.asarray(stage_ids) - 1]
    for i, (frame, crop_box, person_box, _) in enumerate(pending):
      poses_out.append(out[:, i])
      crop_boxes.append(crop_box)
      person_boxes.append(person_box)
      if writer is not None:
        writer.add(compose_frame(frame, crop_box, person_box, out[:, i], stage_ids, names,
                                 parents, panel_size, len(poses_out) - 1))
    pending.clear()

  count = 0
  bar = tqdm.tqdm(total=total, unit="frame", desc="predict", dynamic_ncols=True)
  try:
    for frame in source:
      if max_frames and count >= max_frames:
        break
      if boxes is not None and count >= len(boxes):
        raise InputError(f"boxes file {boxes_path} has {len(boxes)} boxes but {input_path} "
                         "has more frames")
      first_shape = first_shape or frame.shape[:2]
      person_box = boxes[count] if boxes is not None else np.full(4, np.nan)
      crop_box = (crops.square_crop_box(person_box) if boxes is not None
                  else crops.centre_crop_box(*frame.shape[:2]))
      crop = crops.crop_and_resize(frame, crop_box, size)
      pending.append((frame, crop_box, person_box, crop))
      count += 1
      if len(pending) == clip_length:
        flush()
        bar.update(clip_length)
    if pending:
      bar.update(len(pending))
      flush()
  finally:
    bar.close()
    if writer is not None:
      writer.close()
  if boxes is not None:
    _check_box_count(boxes, boxes_path, input_path, count, max_frames)

  poses = np.stack(poses_out).astype(np.float32)        # (F, K', P, 3)
  crop_boxes = np.stack(crop_boxes).astype(np.int64)
  person_boxes = np.stack(person_boxes).astype(np.float64)
  temporal = ("streaming: LSTM state carried across all frames" if streaming else
              f"clips of {clip_length} frames, LSTM state reset per clip (as evaluation)")
  meta = {
      "input": os.path.abspath(input_path),
      "input_kind": source.kind,
      "num_frames": int(count),
      "frame_size_hw": list(first_shape),
      "fps": fps,
      "workdir": os.path.abspath(run.workdir),
      "checkpoint_step": run.step,
      "units": "mm",
      "coordinates": COORDINATES,
      "root_joint": int(run.norm.root_joint),
      "joint_names": list(names),
      "parents": list(parents),
      "stages": stage_ids,
      "final_stage": k,
      "crop": crop_kind,
      "crop_description": (
          "person boxes from the boxes file, short side grown to a square about the centre, "
          "zero-padded outside the image" if boxes is not None else
          "no boxes given: the largest centred square of each frame"),
      "boxes_file": os.path.abspath(boxes_path) if boxes_path else None,
      "crop_boxes_units": "pixels of the input frame, [x0, y0, x1, y1], x1 - x0 = y1 - y0",
      "input_size": int(size),
      "clip_length": int(clip_length),
      "temporal": temporal,
      "streaming": bool(streaming),
      "model": config.model.to_dict(),
  }
  _write_poses(output, meta, poses, crop_boxes, person_boxes)
  outputs = ["poses.npz", "poses.json"] + ([os.path.basename(writer.path)] if writer else [])
  logging.info("Wrote %s for %d frames to %s (crop: %s, checkpoint step %d)",
               ", ".join(outputs), count, output, crop_kind, run.step)
  meta["outputs"] = [os.path.join(output, o) for o in outputs]
  return meta


def _write_poses(output: str, meta: dict, poses: np.ndarray, crop_boxes: np.ndarray,
                 person_boxes: np.ndarray) -> None:
  """poses.npz (arrays) and poses.json (metadata, then per frame: crop box, stage poses)."""
  stages = meta["stages"]
  np.savez(os.path.join(output, "poses.npz"), poses_mm=poses,
           stages=np.asarray(stages, np.int32), crop_boxes=crop_boxes,
           person_boxes=person_boxes, frame_index=np.arange(len(poses), dtype=np.int64),
           joint_names=np.asarray(meta["joint_names"]),
           parents=np.asarray(meta["parents"], np.int32),
           checkpoint_step=np.int64(meta["checkpoint_step"]))
  frames = [{
      "frame": i,
      "crop_box": crop_boxes[i].tolist(),
      "poses_mm": {f"stage_{s}": np.round(poses[i, j].astype(np.float64), 2).tolist()
                   for j, s in enumerate(stages)},
  } for i in range(len(poses))]
  with open(os.path.join(output, "poses.json"), "w") as f:
    json.dump({"metadata": meta, "frames": frames}, f)


class _ClipRunner:
  """Runs the model on one clip of crops at a time, as evaluation does or streaming.

  Per-clip (evaluation): every clip starts from zero LSTM state. Streaming: the state at
  the end of a clip starts the next. A short last clip is padded by repeating its final
  frame (evaluation's padding); the padded frames' outputs are dropped.
  """

  def __init__(self, run: inference.Run, streaming: bool):
    self.clip_length, self.params = run.config.clip_length, run.params
    self.streaming = streaming
    model, norm = run.model, run.norm

    def stream_step(params, carries, frames):
      poses, carries = model.apply({"params": params}, poses.model_input(frames),
                                   carries=carries, return_carries=True)
      return poses.denormalize_root_relative(poses, norm), carries

    if streaming:
      self._step = jax.jit(stream_step)
      self._carries = poses.zero_carries(model, run.params, 1,
                                             run.config.model.input_size)
    else:
      self._step = jax.jit(poses.make_forward_mm(model, norm))

  def __call__(self, crops: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) uint8, n <= clip_length -> (K, n, P, 3) float32 root-relative mm."""
    n = len(crops)
    clip = np.concatenate([crops, np.repeat(crops[-1:], self.clip_length - n, axis=0)])
    if self.streaming:
      out, self._carries = self._step(self.params, self._carries, clip[None])
    else:
      out = self._step(self.params, clip[None])
    return np.asarray(out)[:, 0, :n]


def _check_box_count(boxes, boxes_path, input_path, num_frames: int,
                     max_frames: Optional[int]) -> None:
  """One box per input frame; with --max_frames, at least one per processed frame."""
  if max_frames and num_frames >= max_frames:
    if len(boxes) < max_frames:
      raise InputError(f"boxes file {boxes_path} has {len(boxes)} boxes, fewer than the "
                       f"{max_frames} frames to process (--max_frames)")
  elif len(boxes) != num_frames:
    raise InputError(f"boxes file {boxes_path} has {len(boxes)} boxes but {input_path} "
                     f"has {num_frames} frames")


# --------------------------------------------------------------------------- animation


def compose_frame(frame_rgb: np.ndarray, crop_box: np.ndarray, person_box: np.ndarray,
                  poses_mm: np.ndarray, stage_ids, names, parents, height: int,
                  index: int) -> np.ndarray:
  """One animation frame (BGR): the input with its crop box, then one panel per stage.

  poses_mm: (K', P, 3) root-relative mm of the stages in `stage_ids`.
  """
  image = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
  t = max(1, image.shape[0] // 200)
  if np.all(np.isfinite(person_box)):
    cv2.rectangle(image, tuple(int(round(v)) for v in person_box[:2]),
                  tuple(int(round(v)) for v in person_box[2:]), (0, 200, 255), t)
  cv2.rectangle(image, tuple(int(v) for v in crop_box[:2]),
                tuple(int(v) for v in crop_box[2:]), (0, 200, 0), t)
  image = visualize.fit_height(image, height)
  label = f"frame {index}" + ("" if np.all(np.isfinite(person_box)) else
                              " (centre crop: no boxes)")
  visualize.put_text(image, label, (4, 4), scale=0.45, colour=(255, 255, 255))
  panels = [visualize.pose_panel(poses_mm[j], parents, names, height, title=f"stage {s}")
            for j, s in enumerate(stage_ids)]
  for panel in panels:
    panel[:, 0] = (200, 200, 200)   # a separator line
  return np.concatenate([image] + panels, axis=1)


class _AnimationWriter:
  """Writes BGR frames to MP4 ('mp4v') or GIF; every frame is fitted to the first's size."""

  def __init__(self, path: str, fps: float, height: int):
    self.path, self.fps, self.height = path, fps, height
    self._size = None
    self._video = None
    self._gif = []

  def add(self, frame: np.ndarray) -> None:
    if self._size is None:
      h, w = frame.shape[:2]
      self._size = (w + w % 2, h + h % 2)    # encoders want even sides
      if self.path.endswith(".mp4"):
        self._video = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"),
                                      self.fps, self._size)
        if not self._video.isOpened():
          raise OSError(f"cannot write {self.path}: OpenCV has no 'mp4v' encoder here; "
                        "use --animation=gif")
    frame = _fit_into(frame, *self._size)
    if self._video is not None:
      self._video.write(frame)
    else:
      self._gif.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))

  def close(self) -> None:
    if self._video is not None:
      self._video.release()
    elif self._gif:
      self._gif[0].save(self.path, save_all=True, append_images=self._gif[1:],
                        duration=int(round(1000 / self.fps)), loop=0)
      self._gif = []


def _fit_into(image: np.ndarray, width: int, height: int) -> np.ndarray:
  """Letterboxes an image into width x height (frames of a folder may differ in size)."""
  h, w = image.shape[:2]
  if (w, h) == (width, height):
    return image
  s = min(width / w, height / h)
  nw, nh = max(1, int(w * s)), max(1, int(h * s))
  out = np.zeros((height, width, 3), np.uint8)
  out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
  return out


# --------------------------------------------------------------------------- command line


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  for name in ("workdir", "input", "output"):
    if not FLAGS[name].value:
      raise app.UsageError(f"--{name} is required")
  logs.quiet_library_logs()
  try:
    run = inference.load_run(FLAGS.workdir, FLAGS.checkpoint_step, best=FLAGS.best)
    logging.info("Loaded %s at checkpoint step %d", FLAGS.workdir, run.step)
    predict(run, FLAGS.input, FLAGS.output, boxes_path=FLAGS.boxes, stages=FLAGS.stages,
            max_frames=FLAGS.max_frames, streaming=FLAGS.streaming,
            animation=FLAGS.animation, fps=FLAGS.fps, panel_size=FLAGS.panel_size)
  except (InputError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from e


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so that importing this
  module next to other command lines (main, export, benchmark) cannot clash."""
  flags.DEFINE_string("workdir", None, "A training workdir (config.json, "
                      "normalization.json, checkpoints/).")
  flags.DEFINE_string("input", None, "A video file or a folder of image frames.")
  flags.DEFINE_string("output", None, "Directory for poses.npz, poses.json and the "
                      "animation.")
  flags.DEFINE_string("boxes", None, "Per-frame person boxes [x0, y0, x1, y1] in pixels "
                      "(.json, .csv or .npy; see the module doc). Default: a centred "
                      "square.")
  flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step to load (default: latest).")
  flags.DEFINE_bool("best", False, "Load the best checkpoint (lowest evaluation MPJPE).")
  flags.DEFINE_enum("stages", "all", ("all", "last"),
                    "Which stages' poses to write and draw.")
  flags.DEFINE_integer("max_frames", None, "Process at most this many frames.")
  flags.DEFINE_bool("streaming", False, "Carry the LSTM state across clips instead of "
                    "resetting it per clip as evaluation does.")
  flags.DEFINE_enum("animation", "mp4", ("mp4", "gif", "none"), "Animation format.")
  flags.DEFINE_float("fps", None, "Frame rate of the animation (default: the video's, or "
                     "10 for a folder of frames).")
  flags.DEFINE_integer("panel_size", 256, "Height of the animation in pixels.")


def run():
  """The command line: `python -m rpsm_jax.predict`."""
  xla_cpu.configure()   # before JAX creates its CPU client
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
