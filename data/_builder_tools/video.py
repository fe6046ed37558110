"""Opening the release videos that h36m_clips and humaneva_clips stream frames from."""

import pathlib

import cv2


def open_video(path: pathlib.Path, error: type[Exception]) -> cv2.VideoCapture:
  """Opens a video for streaming; raises `error` naming it if it cannot."""
  if not path.is_file():
    raise error(f"missing video {path}")
  capture = cv2.VideoCapture(str(path))
  if not capture.isOpened():
    raise error(f"{path}: cannot open video (truncated or unreadable?)")
  return capture
