"""Winograd convolution (rpsm_jax.cpu.winograd) against lax.conv, and its use in the model."""

import functools

import jax
import jax.numpy as jnp
from jax import lax
import pytest

from configs import synthetic_tiny
from rpsm_jax.training import config_checks
from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import winograd

NHWC = ("NHWC", "HWIO", "NHWC")


def direct(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)


def _random(shape, seed):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


# Odd, even, non-multiple-of-tile and single-tile image sizes; channels in != out.
@pytest.mark.parametrize("tile", winograd.TILES)
@pytest.mark.parametrize("shape", [(2, 7, 9, 5, 6), (3, 8, 8, 4, 4), (1, 13, 6, 3, 2),
                                   (2, 2, 3, 4, 5)])
def test_conv_and_gradients_match_lax(tile, shape):
  n, h, w, c, o = shape
  x, k, dy = _random((n, h, w, c), 0), _random((3, 3, c, o), 1), _random((n, h, w, o), 2)
  y, vjp = jax.vjp(lambda x, k: winograd.conv3x3(x, k, tile), x, k)
  y_ref, vjp_ref = jax.vjp(direct, x, k)
  # Relative to the largest value; F(4,3)'s transforms multiply by up to 8 and 1/24, so
  # its float32 rounding is ~10x F(2,3)'s (measured 2e-7 and 3e-6).
  tol = 1e-5 if tile == 2 else 1e-4
  for got, want in zip((y,) + vjp(dy), (y_ref,) + vjp_ref(dy)):
    assert got.shape == want.shape
    assert float(jnp.abs(got - want).max()) <= tol * float(jnp.abs(want).max())


def test_tile_choice_by_image_size():
  assert winograd.choose_tile((1, 92, 92, 8)) == 4
  assert winograd.choose_tile((1, 46, 80, 8)) == 2


def _uses_lax_conv(fn, *args) -> bool:
  return "conv_general_dilated" in str(jax.make_jaxpr(fn)(*args))


def test_dispatch_takes_only_eligible_convolutions(convolutions_lax_keeps):
  conv = convolution.make_conv("winograd")
  x, w = _random((1, 8, 8, 4), 0), _random((3, 3, 4, 4), 1)
  pad1 = ((1, 1), (1, 1))
  assert not _uses_lax_conv(lambda x, w: conv(x, w, (1, 1), pad1, dimension_numbers=NHWC),
                            x, w)
  ineligible = convolutions_lax_keeps(conv)
  ineligible["stride 2"] = lambda x, w: conv(x, w, (2, 2), pad1, dimension_numbers=NHWC)
  ineligible["padding 0"] = lambda x, w: conv(x, w, (1, 1), ((0, 0), (0, 0)),
                                              dimension_numbers=NHWC)
  for name, fn in ineligible.items():
    assert _uses_lax_conv(fn, x, w), name
  w5 = _random((5, 5, 4, 4), 1)
  assert _uses_lax_conv(lambda x, w: conv(x, w, (1, 1), ((2, 2), (2, 2)),
                                          dimension_numbers=NHWC), x, w5)
  # auto's channel threshold (XLA's convolutions): 4 channels stay direct.
  auto = functools.partial(winograd.conv_general_dilated, auto=True)
  assert _uses_lax_conv(lambda x, w: auto(x, w, (1, 1), pad1, dimension_numbers=NHWC), x, w)


def test_auto_selection():
  # Wide layers always; 64-channel layers only while their input is small.
  assert winograd.auto_selects((5, 46, 46, 512), (3, 3, 512, 256))
  assert winograd.auto_selects((40, 20, 20, 64), (3, 3, 64, 64))
  assert not winograd.auto_selects((5, 368, 368, 64), (3, 3, 64, 64))
  assert not winograd.auto_selects((40, 10, 10, 64), (3, 3, 64, 32))
  batch = jax.export.symbolic_shape("b")[0]
  assert not winograd.auto_selects((batch, 46, 46, 512), (3, 3, 512, 256))


def test_config_check_names_bad_fields():
  config = synthetic_tiny.get_config()
  config.model.conv_algorithm = "fft"
  with pytest.raises(ValueError, match="config.model.conv_algorithm"):
    config_checks.check(config)
  config = synthetic_tiny.get_config()
  config.model.winograd_tile = 6
  with pytest.raises(ValueError, match="config.model.winograd_tile"):
    config_checks.check(config)


def test_model_outputs_and_gradients_match_direct(matches_direct):
  # One tile: test_conv_and_gradients_match_lax checks each tile's values and gradients, and
  # XLA takes minutes to compile the whole model's F(4, 3) transforms (214 s on 2 cores).
  direct_model, winograd_model, params, frames = matches_direct("winograd", 2, tol=1e-3)
  # Winograd really ran: the direct model has more conv_general_dilated calls.
  count = lambda m: str(jax.make_jaxpr(m.apply)({"params": params}, frames)).count(
      "conv_general_dilated")
  assert count(winograd_model) < count(direct_model)
