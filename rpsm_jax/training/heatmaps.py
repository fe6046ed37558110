"""Gaussian joint heatmaps at the trunk's output resolution: the 2D pretraining targets.

The trunk maps an S x S input to an (S/8) x (S/8) grid (three 2x2 pools). Heatmap cell
(i, j) covers input pixels [8 j, 8 j + 8] x [8 i, 8 i + 8] in the edge convention of
data/README.md, so its centre is input point (8 j + 4, 8 i + 4): CPM's ground truth
(its `start = stride / 2 - 0.5` in pixel-centre coordinates). CPM's sigma is 7 input
pixels at 368 x 368.
"""

import jax
import jax.numpy as jnp
import numpy as np

STRIDE = 8  # Input pixels per heatmap cell: the trunk's three 2x2 pools.
SIGMA = 7.0  # CPM's Gaussian width, input pixels.


def heatmaps(joints_2d, visible, size: int, sigma: float = SIGMA, stride: int = STRIDE):
  """Gaussian peaks of height 1 at each visible joint, on the trunk's output grid.

  Args:
    joints_2d: (..., P, 2) joint positions (x, y) in pixels of the S x S input, edge
      convention (pixel j spans [j, j + 1]).
    visible: (..., P) bool or 0/1: joints without a label get an all-zero map.
    size: S, the input side in pixels; a multiple of `stride`.
    sigma: standard deviation of the Gaussian, input pixels.
    stride: input pixels per heatmap cell.

  Returns:
    (..., S / stride, S / stride, P) float32 in [0, 1]; numpy for numpy inputs, jax for
    jax inputs (usable under jit).
  """
  if size % stride:
    raise ValueError(f"heatmaps: size {size} is not a multiple of stride {stride}")
  xp = jnp if isinstance(joints_2d, jax.Array) or isinstance(visible, jax.Array) else np
  joints_2d = xp.asarray(joints_2d, xp.float32)
  cells = (xp.arange(size // stride, dtype=xp.float32) + 0.5) * stride  # (G,) centres.
  dx2 = (cells - joints_2d[..., 0:1]) ** 2  # (..., P, G) along x (columns).
  dy2 = (cells - joints_2d[..., 1:2]) ** 2  # (..., P, G) along y (rows).
  # exp(-(dx² + dy²) / 2σ²) is separable: an outer product per joint.
  gx = xp.exp(-dx2 / (2 * sigma**2))
  gy = xp.exp(-dy2 / (2 * sigma**2))
  maps = gy[..., :, :, None] * gx[..., :, None, :]  # (..., P, G rows, G cols)
  maps = maps * xp.asarray(visible, xp.float32)[..., None, None]
  return xp.moveaxis(maps, -3, -1).astype(xp.float32)
