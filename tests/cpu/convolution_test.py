"""Convolution algorithm choice (rpsm_jax.cpu.convolution.make_conv, config.model.conv_algorithm)."""

import jax
import pytest

from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import onednn

NHWC = ("NHWC", "HWIO", "NHWC")


def test_accelerators_keep_lax():
  for backend in ("gpu", "tpu"):
    assert convolution.make_conv("auto", backend=backend) is None
  assert convolution.make_conv("direct") is None
  with pytest.raises(ValueError, match="CPUs only"):
    convolution.make_conv("onednn", backend="gpu")


def test_bad_values_name_the_field():
  with pytest.raises(ValueError, match="config.model.conv_algorithm"):
    convolution.make_conv("fft")
  with pytest.raises(ValueError, match="config.model.winograd_tile"):
    convolution.make_conv("winograd", tile=3)


def _ops(conv, x_shape, w_shape, strides=(1, 1), padding=((1, 1), (1, 1))):
  x = jax.ShapeDtypeStruct(x_shape, "float32")
  w = jax.ShapeDtypeStruct(w_shape, "float32")
  jaxpr = str(jax.make_jaxpr(
      lambda x, w: conv(x, w, strides, padding, dimension_numbers=NHWC))(x, w))
  return {name for name in ("ffi_call", "conv_general_dilated", "dot_general")
          if name in jaxpr}


@pytest.mark.skipif(not onednn.available()[0], reason=onednn.available()[1])
def test_auto_on_cpu_with_onednn():
  auto = convolution.make_conv("auto", backend="cpu")
  # Narrow layers and the 5x5/2 layers: oneDNN. Wide 3x3/1 layers: Winograd (batched dots).
  assert _ops(auto, (40, 80, 80, 16), (3, 3, 16, 16)) == {"ffi_call"}
  assert _ops(auto, (40, 10, 10, 32), (5, 5, 32, 32), (2, 2), ((2, 2), (2, 2))) == {"ffi_call"}
  assert _ops(auto, (5, 46, 46, 128), (3, 3, 128, 128)) == {"dot_general"}
  assert _ops(auto, (40, 10, 10, 128), (3, 3, 128, 128)) == {"ffi_call"}


def test_describe_names_what_runs():
  assert convolution.describe(None).startswith("lax")
  assert convolution.describe(convolution.make_conv("winograd")) == "Winograd + lax"
  described = convolution.describe(convolution.OnednnConv(with_winograd=True))
  assert described.startswith("oneDNN") and "Winograd" in described
