"""Winograd F(m x m, 3 x 3) convolution for XLA:CPU, with its own gradient.

A 3x3/1 convolution with padding 1 (every trunk and stage layer) computed on m x m output
tiles: input tiles of (m+2)^2 pixels are transformed (V = B^T d B), multiplied per tile
position by the transformed kernel (U = G g G^T) as (m+2)^2 batched matrix products over
channels, and transformed back (Y = A^T M A). F(4, 3) does 36 multiplications where direct
convolution does 144 for a 4x4 tile (4x fewer FLOPs in the products), at the price of
memory-bound transforms, so it wins for wide layers and loses for narrow ones.

Why here: XLA:CPU's Eigen convolutions run near the machine's matmul rate and cannot go
faster; fewer FLOPs can. The gradient is written out (custom_vjp) rather than left to
autodiff, whose transposed tile extraction (overlap-add of pads) was 2-6x slower than the
forward pass: the input gradient is itself a Winograd convolution of the output gradient
with the rotated, transposed kernel; the kernel gradient is one batched product V^T dM
over tiles plus a small transform. The batch products use the backend's dot.

Accuracy (float32, vs lax.conv, random inputs): max error relative to the largest output
2e-7 for F(2, 3), 3e-6 for F(4, 3); only float32 convolutions take this path. GPUs and
TPUs keep lax.conv under config.model.conv_algorithm "auto" (rpsm_jax.cpu.convolution): cuDNN
and the TPU compiler pick their own algorithms, and there the transforms would only add
memory traffic.

Shapes: x (N, H, W, C) NHWC, w (3, 3, C, O) HWIO, y (N, H, W, O).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

TILES = (2, 4)
# conv_general_dilated(auto=True): layers with >= 128 input and output channels, and layers with >= 64 whose
# input fits in a server CPU's last-level cache (measured on a 32 MiB-L3 EPYC: 64-channel
# layers at 20x20 and 10x10, 40 images, gained in training and inference; at 368x368
# (173 MB) F(4,3) took 1132 ms vs 949 ms forward+backward, 5 images).
AUTO_MIN_CHANNELS = 128
AUTO_CACHED_MIN_CHANNELS = 64
AUTO_CACHED_BYTES = 16 * 2**20
# (conv_algorithm "auto" on CPUs no longer uses these thresholds: rpsm_jax.cpu.autotune
# times Winograd against oneDNN and XLA per layer on the CPU at hand. On an AVX-512 EPYC
# Winograd beat oneDNN's direct convolution on >= 128-channel layers >= 32 px, e.g.
# 92x92x256 x5 697 / 387 ms forward + backward, and lost on 64-channel ones.)

# (B^T, G, A^T) of Lavin & Gray (2016) for output tile m and kernel 3; tile a = m + 2.
_MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]]),
}


def _matrices(m: int):
  if m not in _MATRICES:
    raise ValueError(f"Winograd output tile must be one of {TILES}, got {m}")
  return tuple(np.asarray(t, np.float64) for t in _MATRICES[m])


def _combine(coefficients, terms):
  """sum_i c_i * terms[i] with the zero terms skipped and +-1 kept as adds (exact)."""
  out = None
  for c, t in zip(coefficients, terms):
    if c == 0:
      continue
    t = t if c == 1 else -t if c == -1 else t * np.asarray(c, t.dtype)
    out = t if out is None else out + t
  return out


def _sandwich(left, right, grid):
  """[[sum_ij left[a, i] right[b, j] grid[i][j]]_b]_a, with grid a nested list of arrays."""
  rows = [[_combine(left[a], [grid[i][j] for i in range(len(grid))])
           for j in range(len(grid[0]))] for a in range(left.shape[0])]
  return [[_combine(right[b], row) for b in range(right.shape[0])] for row in rows]


def _num_tiles(size: int, m: int) -> int:
  return -(-size // m)


def input_transform(x, m: int):
  """x (N, H, W, C) -> V (a*a, N*th*tw, C): B^T d B of every input tile (padding 1).

  Tiles overlap by two pixels; padding to m*(t+1) makes tile t rows 0..m-1 of block t
  plus rows 0..1 of block t+1, so plain slices of a blocked view replace strided ones.
  """
  bt, _, _ = _matrices(m)
  a = m + 2
  n, h, w, c = x.shape
  th, tw = _num_tiles(h, m), _num_tiles(w, m)
  xp = jnp.pad(x, ((0, 0), (1, m * (th + 1) - h - 1), (1, m * (tw + 1) - w - 1), (0, 0)))
  blocks = xp.reshape(n, th + 1, m, tw + 1, m, c)

  def element(i, j):   # (N, th, tw, C): pixel (i, j) of every tile
    bi, ri = divmod(i, m)
    bj, rj = divmod(j, m)
    return blocks[:, bi:bi + th, ri, bj:bj + tw, rj]

  v = _sandwich(bt, bt, [[element(i, j) for j in range(a)] for i in range(a)])
  return jnp.stack([t for row in v for t in row]).reshape(a * a, n * th * tw, c)


def weight_transform(w, m: int):
  """w (3, 3, C, O) -> U (a*a, C, O) = G g G^T per channel pair."""
  _, g, _ = _matrices(m)
  u = _sandwich(g, g, [[w[i, j] for j in range(3)] for i in range(3)])
  return jnp.stack([t for row in u for t in row])


def output_transform(product, m: int, shape):
  """M (a*a, N*th*tw, O) -> y (N, H, W, O) = A^T M A per tile, tiles laid side by side."""
  _, _, at = _matrices(m)
  a = m + 2
  n, h, w = shape
  th, tw = _num_tiles(h, m), _num_tiles(w, m)
  o = product.shape[-1]
  grid = product.reshape(a, a, n, th, tw, o)
  y = _sandwich(at, at, [[grid[i, j] for j in range(a)] for i in range(a)])
  # Stacking tile columns at axis 3 and tile rows at axis 2 gives (N, th, m, tw, m, O),
  # which is the image layout: no transpose.
  y = jnp.stack([jnp.stack(row, axis=3) for row in y], axis=2)
  return y.reshape(n, m * th, m * tw, o)[:, :h, :w]


def output_transform_transpose(dy, m: int):
  """dy (N, H, W, O) -> dM (a*a, N*th*tw, O): the adjoint of output_transform."""
  _, _, at = _matrices(m)
  a = m + 2
  n, h, w, o = dy.shape
  th, tw = _num_tiles(h, m), _num_tiles(w, m)
  blocks = jnp.pad(dy, ((0, 0), (0, m * th - h), (0, m * tw - w), (0, 0)))
  blocks = blocks.reshape(n, th, m, tw, m, o)
  dm = _sandwich(at.T, at.T, [[blocks[:, :, i, :, j] for j in range(m)] for i in range(m)])
  return jnp.stack([t for row in dm for t in row]).reshape(a * a, n * th * tw, o)


def weight_transform_transpose(du, m: int):
  """dU (a*a, C, O) -> dw (3, 3, C, O): the adjoint of weight_transform."""
  _, g, _ = _matrices(m)
  a = m + 2
  grid = du.reshape(a, a, *du.shape[1:])
  dw = _sandwich(g.T, g.T, [[grid[i, j] for j in range(a)] for i in range(a)])
  return jnp.stack([jnp.stack(row) for row in dw])


def _forward(x, w, m):
  v = input_transform(x, m)
  product = jnp.einsum("kpc,kco->kpo", v, weight_transform(w, m))
  return output_transform(product, m, x.shape[:3]), v


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x, w, m: int):
  """3x3/1 convolution, padding 1, by Winograd F(m, 3). x (N,H,W,C), w (3,3,C,O)."""
  return _forward(x, w, m)[0]


def _conv3x3_fwd(x, w, m):
  y, v = _forward(x, w, m)
  return y, (v, w)


def _conv3x3_bwd(m, residuals, dy):
  v, w = residuals
  dm = output_transform_transpose(dy, m)
  dw = weight_transform_transpose(jnp.einsum("kpc,kpo->kco", v, dm), m)
  # The input gradient of a padding-1 3x3 convolution is the same convolution of dy with
  # the kernel rotated by 180 degrees and its channel axes swapped.
  dx = conv3x3(dy, jnp.swapaxes(w[::-1, ::-1], 2, 3), m)
  return dx, dw


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def eligible(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1) -> bool:
  """Whether lax.conv_general_dilated(...) is a 3x3/1 'pad 1' NHWC float32 convolution."""
  if lhs.ndim != 4 or rhs.shape[:2] != (3, 3) or lhs.dtype != jnp.float32:
    return False
  if rhs.dtype != jnp.float32 or feature_group_count != 1:
    return False
  if tuple(window_strides) != (1, 1) or tuple(map(tuple, padding)) != ((1, 1), (1, 1)):
    return False
  for dilation in (lhs_dilation, rhs_dilation):
    if dilation is not None and tuple(dilation) != (1, 1):
      return False
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def auto_selects(lhs_shape, rhs_shape) -> bool:
  """Whether conv_general_dilated(auto=True) runs an eligible layer by Winograd rather than
  XLA's convolution (see AUTO_* above).

  Symbolic shapes (jax.export's batch dimension) keep direct convolution."""
  if not all(isinstance(d, int) for d in tuple(lhs_shape) + tuple(rhs_shape)):
    return False
  channels = min(rhs_shape[2], rhs_shape[3])
  if channels >= AUTO_MIN_CHANNELS:
    return True
  return (channels >= AUTO_CACHED_MIN_CHANNELS
          and 4 * int(np.prod(lhs_shape)) <= AUTO_CACHED_BYTES)


def choose_tile(lhs_shape) -> int:
  """F(4, 3) on images of at least 64 pixels a side, F(2, 3) on smaller ones, where the
  padding to whole 4x4 tiles and the few tiles per image cost more than F(4, 3) saves
  (measured: 46x46x512 F(2,3) 454 ms vs F(4,3) 527 ms forward+backward; 92x92x256
  F(4,3) 402 ms vs F(2,3) 499 ms; 5 images)."""
  return 4 if min(lhs_shape[1], lhs_shape[2]) >= 64 else 2


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, *, tile: int = 0, auto: bool = False, **kwargs):
  """Drop-in for lax.conv_general_dilated (flax nn.Conv's `conv_general_dilated`):
  Winograd F(tile, 3) (tile 0: choose_tile) for eligible() convolutions, only those that
  auto_selects() when `auto`; lax otherwise."""
  if (not kwargs and eligible(lhs, rhs, window_strides, padding, lhs_dilation,
                              rhs_dilation, dimension_numbers, feature_group_count)
      and (not auto or auto_selects(lhs.shape, rhs.shape))):
    return conv3x3(lhs, rhs, tile or choose_tile(lhs.shape))
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers, feature_group_count,
                                  precision=precision, **kwargs)
