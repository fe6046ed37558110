"""The authors' square person crop, one function for training data and inference alike.

Coordinates are continuous full-image pixels in which pixel (i, j) covers
[j, j + 1) x [i, i + 1); a crop_box [x0, y0, x1, y1] with side L = x1 - x0 maps a
full-image point p to (p - (x0, y0)) * S / L in the S x S crop, exactly (cv2.resize
aligns pixel corners). The dataset builders store crops made here; predict and streaming
cut their frames here, so a model sees at inference what it saw in training.
"""

import cv2
import numpy as np


def square_crop_box(box: np.ndarray) -> np.ndarray:
  """The authors' crop: the box's short side grown to its long side, centred.

  Corners are widened to whole pixels (so cutting needs no resampling), which can
  move the centre by under a pixel; the result always contains the box.

  Args:
    box: (4,) [x0, y0, x1, y1], full-image pixels.

  Returns:
    (4,) int64 [x0, y0, x0 + L, y0 + L], L >= 1; may extend beyond the image.
  """
  x0, y0, x1, y1 = np.asarray(box, np.float64)
  side = max(x1 - x0, y1 - y0)
  left = (x0 + x1 - side) / 2
  top = (y0 + y1 - side) / 2
  left_px, top_px = int(np.floor(left)), int(np.floor(top))
  side_px = max(int(np.ceil(left + side)) - left_px, int(np.ceil(top + side)) - top_px,
                1)
  return np.array([left_px, top_px, left_px + side_px, top_px + side_px], np.int64)


def centre_crop_box(height: int, width: int) -> np.ndarray:
  """The largest square centred in an image, whole pixels: the crop when no person box is
  given. (4,) int64 [x0, y0, x0 + L, y0 + L], L = min(height, width)."""
  side = min(height, width)
  x0, y0 = (width - side) // 2, (height - side) // 2
  return np.array([x0, y0, x0 + side, y0 + side], np.int64)


def crop_and_resize(image: np.ndarray, crop_box: np.ndarray, size: int) -> np.ndarray:
  """Cuts the square `crop_box` out of `image` (zeros outside) and resizes it.

  Args:
    image: (H, W, C) uint8.
    crop_box: (4,) int [x0, y0, x1, y1] with x1 - x0 == y1 - y0.
    size: S, the output side, pixels.

  Returns:
    (S, S, C) uint8.
  """
  x0, y0, x1, y1 = (int(v) for v in crop_box)
  height, width = image.shape[:2]
  if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
    square = image[y0:y1, x0:x1]
  else:
    square = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x1, width), min(y1, height)
    if ix0 < ix1 and iy0 < iy1:
      square[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
  # Area averaging when shrinking avoids aliasing at small stored sizes.
  interpolation = cv2.INTER_AREA if square.shape[0] > size else cv2.INTER_LINEAR
  return cv2.resize(square, (size, size), interpolation=interpolation)
