"""Person boxes and the authors' square crop (all datasets here crop alike).

Coordinates are continuous full-image pixels in which pixel (i, j) covers
[j, j + 1) x [i, i + 1); a crop_box [x0, y0, x1, y1] with side L = x1 - x0 maps a
full-image point p to (p - (x0, y0)) * S / L in the stored S x S crop, exactly
(cv2.resize aligns pixel corners).
"""

import cv2
import numpy as np

from rpsm_jax.crops import crop_and_resize, square_crop_box  # noqa: F401  (the one crop)


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
