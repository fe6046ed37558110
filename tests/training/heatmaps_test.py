"""Tests of the Gaussian heatmap targets against a per-cell loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpsm_jax.training import heatmaps as heatmaps_lib


def _loop(joints_2d, visible, size, sigma, stride=8):
  grid = size // stride
  out = np.zeros((grid, grid, len(joints_2d)), np.float64)
  for p, ((x, y), vis) in enumerate(zip(joints_2d, visible)):
    for i in range(grid):  # Rows: y.
      for j in range(grid):  # Columns: x.
        cx, cy = stride * j + stride / 2, stride * i + stride / 2
        out[i, j, p] = vis * np.exp(-((cx - x)**2 + (cy - y)**2) / (2 * sigma**2))
  return out


def test_matches_a_loop_and_peaks_at_the_joint():
  rng = np.random.default_rng(0)
  joints_2d = rng.uniform(-10, 74, (16, 2))
  joints_2d[0] = (20.0, 44.0)  # Exactly on the centre of cell (row 5, col 2).
  visible = rng.uniform(size=16) > 0.3
  visible[0] = True
  maps = heatmaps_lib.heatmaps(joints_2d, visible, 64, sigma=5.0)
  assert maps.shape == (8, 8, 16) and maps.dtype == np.float32
  np.testing.assert_allclose(maps, _loop(joints_2d, visible, 64, 5.0), atol=1e-6)
  assert maps[5, 2, 0] == pytest.approx(1.0)
  assert np.unravel_index(np.argmax(maps[..., 0]), (8, 8)) == (5, 2)
  assert not maps[..., ~visible].any()


def test_batched_and_jax_inputs_agree():
  rng = np.random.default_rng(1)
  joints_2d = rng.uniform(0, 368, (2, 3, 16, 2)).astype(np.float32)
  visible = rng.uniform(size=(2, 3, 16)) > 0.5
  maps = heatmaps_lib.heatmaps(joints_2d, visible, 368)
  assert maps.shape == (2, 3, 46, 46, 16)
  np.testing.assert_allclose(maps[1, 2], _loop(joints_2d[1, 2], visible[1, 2], 368, 7.0),
                             atol=1e-6)
  jitted = jax.jit(heatmaps_lib.heatmaps, static_argnums=(2,))(
      jnp.asarray(joints_2d), jnp.asarray(visible), 368)
  assert isinstance(jitted, jax.Array)
  np.testing.assert_allclose(np.asarray(jitted), maps, atol=1e-6)


def test_size_must_be_a_multiple_of_the_stride():
  with pytest.raises(ValueError, match="size 100 is not a multiple of stride 8"):
    heatmaps_lib.heatmaps(np.zeros((16, 2)), np.ones(16), 100)
