"""Per-frame person boxes [x0, y0, x1, y1] (pixels) from a .json, .csv or .npy file.

Formats, one row per input frame (the first N rows with --max_frames):
  .json  [[x0, y0, x1, y1], ...] or {"boxes": [[x0, y0, x1, y1], ...]}
  .csv   one "x0,y0,x1,y1" line per frame (commas or spaces); an optional header line and
         lines starting with '#' are skipped
  .npy   a float array of shape (N, 4)
"""

import json
import os
import re
from typing import Optional

import numpy as np

from rpsm_jax.apps.predict.frames import InputError


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


def check_box_count(boxes, boxes_path, input_path, num_frames: int,
                     max_frames: Optional[int]) -> None:
  """One box per input frame; with --max_frames, at least one per processed frame."""
  if max_frames and num_frames >= max_frames:
    if len(boxes) < max_frames:
      raise InputError(f"boxes file {boxes_path} has {len(boxes)} boxes, fewer than the "
                       f"{max_frames} frames to process (--max_frames)")
  elif len(boxes) != num_frames:
    raise InputError(f"boxes file {boxes_path} has {len(boxes)} boxes but {input_path} "
                     f"has {num_frames} frames")
