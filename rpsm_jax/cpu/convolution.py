"""Which convolution implementation the model's layers use (config.model.conv_algorithm).

- "direct": lax.conv_general_dilated everywhere (XLA's own kernels; cuDNN on GPUs).
- "winograd": Winograd F(m, 3) (rpsm_jax.cpu.winograd) for every float32 3x3/1 layer.
- "onednn": oneDNN (rpsm_jax.cpu.onednn, an FFI custom call) for every float32 NHWC layer;
  CPU only, and an error where oneDNN cannot be built.
- "auto": on the CPU backend, oneDNN where available plus Winograd for the wide layers
  where it is faster still (winograd.OVER_ONEDNN_*), else the Winograd/direct
  mix of winograd.auto_selects; on GPUs and TPUs, lax (cuDNN and the TPU compiler choose
  their own algorithms, and custom calls or transforms would only get in their way).

make_conv returns the models.Convolution the layers run (None: lax's).
"""

import functools
import logging
from typing import Optional

import jax
import jax.numpy as jnp

from rpsm_jax.cpu import onednn
from rpsm_jax.models.layers import Convolution
from rpsm_jax.cpu import winograd

ALGORITHMS = ("auto", "direct", "winograd", "onednn")


NHWC = ("NHWC", "HWIO", "NHWC")


class OnednnConv:
  """lax.conv_general_dilated's signature on CPUs with oneDNN: oneDNN for eligible layers
  (onednn.eligible), Winograd instead for those winograd.auto_selects(over_onednn=True)
  when `with_winograd`, lax for the rest. `conv_bias_relu` runs convolution, bias and
  ReLU as one oneDNN call where the layer runs on oneDNN."""

  def __init__(self, with_winograd: bool, tile: int = 0):
    self.with_winograd = with_winograd
    self.tile = tile

  def _takes_winograd(self, *args) -> bool:
    lhs, rhs = args[:2]
    return (self.with_winograd and winograd.eligible(*args)
            and winograd.auto_selects(lhs.shape, rhs.shape, over_onednn=True))

  def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
               precision=None, **kwargs):
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, feature_group_count)
    if not kwargs and self._takes_winograd(*args):
      return winograd.conv3x3(lhs, rhs, self.tile or winograd.choose_tile(lhs.shape))
    return onednn.conv_general_dilated(*args, precision=precision, **kwargs)

  def conv_bias_relu(self, x, kernel, bias, strides, padding):
    """relu(conv(x, kernel) + bias) for an NHWC/HWIO layer: one oneDNN call where the layer
    runs on oneDNN, None where it does not (the caller then adds bias and ReLU itself)."""
    args = (x, kernel, strides, padding, None, None, NHWC, 1)
    if (bias.dtype != jnp.float32 or not onednn.eligible(*args)
        or self._takes_winograd(*args)):
      return None
    return onednn.conv_bias_relu(x, kernel, bias, *onednn.static_args(strides, padding))


def make_conv(algorithm: str, tile: int = 0, backend: Optional[str] = None
              ) -> Optional[Convolution]:
  """The Convolution for config.model.conv_algorithm (None: lax's).

  backend: the platform the model will run on (default: JAX's default backend).
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"config.model.conv_algorithm must be one of {ALGORITHMS}, "
                     f"got {algorithm!r}")
  if tile not in (0,) + winograd.TILES:
    raise ValueError(f"config.model.winograd_tile must be 0 (auto) or one of "
                     f"{winograd.TILES}, got {tile!r}")
  on_cpu = (backend or jax.default_backend()) == "cpu"
  if algorithm == "winograd":
    return Convolution(functools.partial(winograd.conv_general_dilated, tile=tile))
  if algorithm == "onednn":
    if not on_cpu:
      raise ValueError("config.model.conv_algorithm='onednn' runs on CPUs only; use 'auto' "
                       "or 'direct' on GPUs and TPUs")
    onednn.load()   # raises with the reason (no compiler, no libdnnl-dev)
    return _onednn(OnednnConv(with_winograd=False))
  if algorithm == "direct" or not on_cpu:
    return None
  ok, why = onednn.available()
  if ok:
    return _onednn(OnednnConv(with_winograd=True, tile=tile))
  logging.info("conv_algorithm auto: %s Using XLA's convolutions.", why)
  return Convolution(functools.partial(winograd.conv_general_dilated, tile=tile, auto=True))


def _onednn(conv: OnednnConv) -> Convolution:
  return Convolution(conv, conv_bias_relu=conv.conv_bias_relu)


def describe(conv: Optional[Convolution]) -> str:
  """What a make_conv result runs, in words (rpsm_jax.tools.benchmark's table)."""
  if conv is None:
    return "lax (XLA's convolutions)"
  conv = conv.conv
  if isinstance(conv, OnednnConv):
    return ("oneDNN (bias and ReLU fused)"
            + (" + Winograd for >= 128 channels, >= 32 px" if conv.with_winograd else ""))
  if conv.keywords.get("auto"):
    return f"Winograd for wide layers + lax ({onednn.available()[1]})"
  return "Winograd + lax"
