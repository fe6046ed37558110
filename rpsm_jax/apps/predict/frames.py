"""The frames predict reads: a video's (cv2.VideoCapture) or a folder's image files, RGB.

Errors name the file: a missing, unreadable, empty or undecodable input is an InputError.
"""

import os
import re
from typing import Iterator

from absl import logging
import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class InputError(ValueError):
  """An input, boxes file or workdir that cannot be used; the message names the file."""


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
