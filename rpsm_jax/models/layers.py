"""Small building blocks shared by the RPSM modules."""

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
from jax import lax
import jax.numpy as jnp

from rpsm_jax.models import pooling

INITS = ("he", "xavier")
# Linear read-outs (no ReLU after them) always use Xavier.
output_init = nn.initializers.xavier_uniform()


def relu_init(init: str):
  """Kernel initialiser of a layer followed by ReLU.

  "he" (default): He normal, variance 2 / fan_in, which keeps activations at scale through
  the 19+ ReLU layers of a stage. "xavier": the paper's text; in this deep ReLU stack it
  shrinks the signal by orders of magnitude before the first stage's output, which stalls
  training from scratch (the authors started from a pretrained trunk; their Lua code left
  Torch's default init).
  """
  if init == "he":
    return nn.initializers.he_normal()
  if init == "xavier":
    return nn.initializers.xavier_uniform()
  raise ValueError(f"config.model.initializer must be one of {INITS}, got {init!r}")


def scaled(channels: int, width: float) -> int:
  """Channel count under the width multiplier, at least 8 so tiny configs stay valid."""
  return max(8, int(round(channels * width)))


@dataclasses.dataclass(frozen=True)
class Convolution:
  """The convolution the layers run (models.create_model's `convolution`).

  conv: lax.conv_general_dilated's signature (rpsm_jax.cpu.convolution offers Winograd and
    oneDNN ones for CPUs).
  conv_bias_relu: optional fused relu(conv(x, kernel) + bias) for an NHWC/HWIO layer,
    (x, kernel, bias, strides, padding) -> array, or None for a layer it does not take
    (the layer then adds bias and ReLU itself).
  """
  conv: Callable = lax.conv_general_dilated
  conv_bias_relu: Optional[Callable] = None

  def __call__(self, *args, **kwargs):
    return self.conv(*args, **kwargs)


LAX = Convolution()


class Conv2D(nn.Module):
  """nn.Conv (same parameters "kernel" (k, k, C_in, features) and "bias", same
  initialisation order, so the same values) with padding k // 2, followed by ReLU when
  `relu`. Where `conv` has conv_bias_relu and takes the layer, convolution, bias and ReLU
  run as one call.
  Input (..., H, W, C_in) -> (..., ceil(H/stride), ceil(W/stride), features).
  """
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.he_normal()
  conv: Optional[Convolution] = None   # None: LAX
  relu: bool = False

  @nn.compact
  def __call__(self, x):
    k, pad = self.kernel, ((self.kernel // 2,) * 2,) * 2
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    batch_shape = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    strides = (self.stride, self.stride)
    # Initialisation only needs shapes (the parameters do not depend on the convolution):
    # lax's, so no CPU kernel is built or timed for the init input's shapes.
    conv = LAX if self.is_initializing() else (self.conv or LAX)
    fused = conv.conv_bias_relu if self.relu else None
    y = fused(x, kernel, bias, strides, pad) if fused is not None else None
    if y is None:
      y = conv(x, kernel, strides, pad, dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
      y = nn.relu(y) if self.relu else y
    return y.reshape(batch_shape + y.shape[1:])


class ConvReLU(nn.Module):
  """Convolution with symmetric padding k // 2 (the authors' Torch 'pad') + ReLU.

  Not "SAME": for a stride-2 convolution on an even size XLA's SAME pads (1, 2) where
  Torch pads (2, 2), which shifts every window by one pixel (46 -> 23 and 12 -> 6 in the
  feature adaption). Output sizes are the same for odd kernels.
  `conv`: the Convolution to run (None: lax's).
  Input (N, H, W, C_in) -> output (N, ceil(H/stride), ceil(W/stride), features).
  """
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: Any = jnp.float32
  initializer: str = "he"
  conv: Optional[Convolution] = None

  @nn.compact
  def __call__(self, x):
    return Conv2D(self.features, self.kernel, self.stride, self.dtype,
                  relu_init(self.initializer), self.conv, relu=True, name="conv")(x)


def max_pool_2x2(x, ceil_mode: bool = False):
  """2x2/2 max-pool of (N, H, W, C). Ceil mode pads bottom/right with -inf as Torch does.

  rpsm_jax.models.pooling: the same values and gradients, with a cheaper gradient on CPU.
  """
  return pooling.max_pool_2x2(x, ceil_mode)
