"""Which convolution implementation the model's layers use (config.model.conv_algorithm).

- "direct": lax.conv_general_dilated everywhere (XLA's own kernels; cuDNN on GPUs).
- "winograd": Winograd F(m, 3) (rpsm_jax.cpu.winograd) for every float32 3x3/1 layer.
- "onednn": oneDNN (rpsm_jax.cpu.onednn, an FFI custom call) for every float32 NHWC layer;
  CPU only, and an error where oneDNN cannot be built.
- "auto": on the CPU backend, per layer the fastest of oneDNN's direct convolution (where
  it builds), Winograd (3x3/1 layers) and XLA's, as timed on this CPU (rpsm_jax.cpu.autotune,
  cached per layer shape and CPU); on GPUs and TPUs, lax (cuDNN and the TPU compiler choose
  their own algorithms, and custom calls or transforms would only get in their way).

make_conv returns the models.Convolution the layers run (None: lax's), and logs once per
process which convolutions a run uses and why.
"""

import functools
import logging
from typing import Optional

import jax
import jax.numpy as jnp

from jax import lax

from rpsm_jax.cpu import autotune
from rpsm_jax.cpu import onednn
from rpsm_jax.cpu import winograd
from rpsm_jax.models.layers import Convolution

ALGORITHMS = ("auto", "direct", "winograd", "onednn")


NHWC = ("NHWC", "HWIO", "NHWC")


class OnednnConv:
  """lax.conv_general_dilated's signature on CPUs with oneDNN ("onednn"): oneDNN for
  eligible layers (onednn.eligible), lax for the rest. `conv_bias_relu` runs convolution,
  bias and ReLU as one oneDNN call."""

  def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
               precision=None, **kwargs):
    return onednn.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                       rhs_dilation, dimension_numbers, feature_group_count,
                                       precision=precision, **kwargs)

  def conv_bias_relu(self, x, kernel, bias, strides, padding):
    """relu(conv(x, kernel) + bias) for an NHWC/HWIO layer in one oneDNN call; None where
    oneDNN does not take the layer (the caller then adds bias and ReLU itself)."""
    if bias.dtype != jnp.float32 or not onednn.eligible(x, kernel, strides, padding, None,
                                                        None, NHWC, 1):
      return None
    return onednn.conv_bias_relu(x, kernel, bias, *onednn.static_args(strides, padding))


class ChosenConv:
  """lax.conv_general_dilated's signature for "auto" on CPUs: each NHWC/HWIO float32 layer
  with static shapes runs what `chooser` (autotune.Chooser) timed fastest for it; other
  calls (dilation, groups, other dtypes or layouts, symbolic shapes) run lax."""

  def __init__(self, chooser: autotune.Chooser):
    self.chooser = chooser

  def _choice(self, x, kernel, strides, padding, relu: bool) -> Optional[str]:
    if not onednn.eligible(x, kernel, strides, padding, None, None, NHWC, 1):
      return None   # (onednn.eligible: the common precondition of all three)
    strides, padding = onednn.static_args(strides, padding)
    return self.chooser.choose(x, kernel, strides, padding, relu)

  def _run(self, choice, x, kernel, strides, padding):
    strides, padding = onednn.static_args(strides, padding)
    if choice == "onednn":
      return onednn.conv(x, kernel, strides, padding)
    if choice == "winograd":
      return winograd.conv3x3(x, kernel, self.chooser.tile or winograd.choose_tile(x.shape))
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)

  def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
               precision=None, **kwargs):
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, feature_group_count)
    if not kwargs and onednn.eligible(*args):
      return self._run(self._choice(lhs, rhs, window_strides, padding, relu=False),
                       lhs, rhs, window_strides, padding)
    return lax.conv_general_dilated(*args, precision=precision, **kwargs)

  def conv_bias_relu(self, x, kernel, bias, strides, padding):
    """relu(conv(x, kernel) + bias), timed and chosen as a layer with ReLU (oneDNN fuses
    bias and ReLU); None for layers "auto" leaves to lax."""
    choice = (self._choice(x, kernel, strides, padding, relu=True)
              if bias.dtype == jnp.float32 else None)
    if choice is None:
      return None
    if choice == "onednn":
      return onednn.conv_bias_relu(x, kernel, bias, *onednn.static_args(strides, padding))
    return jax.nn.relu(self._run(choice, x, kernel, strides, padding) + bias)


_logged = set()


def _log_once(message: str, *args) -> None:
  """Logs `message` the first time it is seen in this process (one line per run, though
  the model is made for training and again for evaluation)."""
  text = message % args
  if text not in _logged:
    _logged.add(text)
    logging.info("%s", text)


def make_conv(algorithm: str, tile: int = 0, backend: Optional[str] = None
              ) -> Optional[Convolution]:
  """The Convolution for config.model.conv_algorithm (None: lax's).

  backend: the platform the model will run on (default: JAX's default backend).
  Logs once which convolutions the run uses and why.
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"config.model.conv_algorithm must be one of {ALGORITHMS}, "
                     f"got {algorithm!r}")
  if tile not in (0,) + winograd.TILES:
    raise ValueError(f"config.model.winograd_tile must be 0 (auto) or one of "
                     f"{winograd.TILES}, got {tile!r}")
  backend = backend or jax.default_backend()
  on_cpu = backend == "cpu"
  conv = _make_conv(algorithm, tile, on_cpu)
  _log_once("Convolutions (conv_algorithm=%s, %s): %s.", algorithm,
            _cpu_words() if on_cpu else backend, _why(algorithm, conv, on_cpu))
  return conv


def _make_conv(algorithm: str, tile: int, on_cpu: bool) -> Optional[Convolution]:
  if algorithm == "winograd":
    return Convolution(functools.partial(winograd.conv_general_dilated, tile=tile))
  if algorithm == "onednn":
    if not on_cpu:
      raise ValueError("config.model.conv_algorithm='onednn' runs on CPUs only; use 'auto' "
                       "or 'direct' on GPUs and TPUs")
    onednn.load()   # raises with the reason (no compiler, no oneDNN)
    conv = OnednnConv()
    return Convolution(conv, conv_bias_relu=conv.conv_bias_relu)
  if algorithm == "direct" or not on_cpu:
    return None
  conv = ChosenConv(autotune.Chooser(with_onednn=onednn.available()[0], tile=tile))
  return Convolution(conv, conv_bias_relu=conv.conv_bias_relu)


def _cpu_words() -> str:
  cpu = autotune.cpu_description()
  return f"CPU {cpu['model']}, {cpu['isa']}, {cpu['cores']} cores"


def _why(algorithm: str, conv: Optional[Convolution], on_cpu: bool) -> str:
  if conv is None:
    return ("XLA's own (lax.conv_general_dilated)" + ("" if on_cpu else
            ": the accelerator's compiler chooses its algorithms"))
  if algorithm == "auto":
    ok, why = onednn.available()
    chooser = conv.conv.chooser
    where = f"timed once per layer shape on this CPU, cached in {chooser.path}"
    if ok:
      return (f"per layer the fastest of oneDNN {onednn.version()} direct (bias and ReLU "
              f"fused; OpenMP: {onednn.wait_policy()}), Winograd F(m,3) (3x3/1 layers) "
              f"and XLA's, {where}")
    return f"per layer the faster of Winograd F(m,3) and XLA's, {where}; {why}"
  return describe(conv)


def describe(conv: Optional[Convolution]) -> str:
  """What a make_conv result runs, in words (rpsm_jax.tools.benchmark's table)."""
  if conv is None:
    return "lax (XLA's convolutions)"
  conv = conv.conv
  if isinstance(conv, OnednnConv):
    return f"oneDNN (bias and ReLU fused; OpenMP: {onednn.wait_policy()})"
  if isinstance(conv, ChosenConv):
    names = "oneDNN, Winograd, XLA" if conv.chooser.with_onednn else "Winograd, XLA"
    return f"per layer the fastest of {names}, timed on this CPU ({_cpu_words()})"
  return "Winograd + lax"
