"""Person boxes and the authors' square crop (all datasets here crop alike).

Coordinates are continuous full-image pixels in which pixel (i, j) covers
[j, j + 1) x [i, i + 1); a crop_box [x0, y0, x1, y1] with side L = x1 - x0 maps a
full-image point p to (p - (x0, y0)) * S / L in the stored S x S crop, exactly
(cv2.resize aligns pixel corners).
"""

import cv2
import numpy as np


def box_from_points(points: np.ndarray, margin: float) -> np.ndarray:
  """Box around 2D points grown by `margin` x its longer side on every side.

  Args:
    points: (P, 2) full-image pixels.
    margin: fraction of the longer side added to each side.

  Returns:
    (4,) float64 [x0, y0, x1, y1].
  """
  lo, hi = points.min(axis=0), points.max(axis=0)
  pad = margin * max(hi - lo)
  return np.concatenate([lo - pad, hi + pad])


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


def jpeg_crop(image: np.ndarray, box: np.ndarray, size: int, jpeg_quality: int,
              name: str) -> tuple[bytes, np.ndarray, float]:
  """The authors' square crop about `box`, resized to S x S and JPEG encoded.

  Args:
    image: (H, W, 3) uint8 BGR, as cv2 decodes and encodes.
    box: (4,) person box [x0, y0, x1, y1], full-image pixels.
    size: S, the stored side, pixels.
    jpeg_quality: JPEG quality, 0 to 100.
    name: what `image` is, for the error message.

  Returns:
    (JPEG bytes, crop_box, scale): crop_box as square_crop_box(box) returns it; a
    full-image point p lies at (p - crop_box[:2]) * scale in the stored crop.

  Raises:
    RuntimeError: JPEG encoding failed.
  """
  crop_box = square_crop_box(box)  # Whole pixels: an exact cut, no resampling.
  crop = crop_and_resize(image, crop_box, size)
  ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
  if not ok:
    raise RuntimeError(f"JPEG encoding failed for {name}")
  return jpeg.tobytes(), crop_box, size / float(crop_box[2] - crop_box[0])
