"""The input video of the predict tests: the synthetic dataset's renderer, a walker pasted
into a wider frame, with its true person box."""

import cv2
import numpy as np
import pytest

from data.synthetic_clips import sequences

NUM_FRAMES = 10          # 2 full clips of 4 frames and a padded one
FRAME_WH = (96, 72)      # non-square: the centre crop and the box crop differ


@pytest.fixture(scope="session")
def video(tmp_path_factory):
  """(path of an mp4, (N, 4) true person boxes in its pixels)."""
  path = str(tmp_path_factory.mktemp("video") / "walk.mp4")
  size, (w, h), (ox, oy) = 64, FRAME_WH, (16, 4)
  spec = sequences.SequenceSpec(seed=3, subject="S9", action="Walking", take=1,
                                num_frames=NUM_FRAMES, fps=10.0, image_size=size,
                                num_cameras=1)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
  boxes = []
  for _, ex in sequences.film(spec):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[oy:oy + size, ox:ox + size] = cv2.imdecode(np.frombuffer(ex["image"], np.uint8),
                                                     cv2.IMREAD_COLOR)
    writer.write(frame)
    crop = ex["crop_box"]
    boxes.append((ex["box"] - np.tile(crop[:2], 2)) * size / (crop[2] - crop[0])
                 + np.array([ox, oy, ox, oy]))
  writer.release()
  return path, np.asarray(boxes)
