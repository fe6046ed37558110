"""Small building blocks shared by the RPSM modules."""

from typing import Any, Callable, Optional

import flax.linen as nn
from jax import lax
import jax.numpy as jnp

from rpsm_jax import pooling

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


class Conv2D(nn.Module):
  """nn.Conv (same parameters "kernel" (k, k, C_in, features) and "bias", same
  initialisation order, so the same values) with padding k // 2, followed by ReLU when
  `relu`. With `conv` offering conv_bias_relu (rpsm_jax.convolution.OnednnConv), the
  convolution, bias and ReLU run as one call where it accepts the layer.
  Input (..., H, W, C_in) -> (..., ceil(H/stride), ceil(W/stride), features).
  """
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.he_normal()
  conv: Optional[Callable] = None
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
    fused = getattr(self.conv, "conv_bias_relu", None) if self.relu else None
    y = fused(x, kernel, bias, strides, pad) if fused is not None else None
    if y is None:
      conv = self.conv or lax.conv_general_dilated
      y = conv(x, kernel, strides, pad, dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
      y = nn.relu(y) if self.relu else y
    return y.reshape(batch_shape + y.shape[1:])


class ConvReLU(nn.Module):
  """Convolution with symmetric padding k // 2 (the authors' Torch 'pad') + ReLU.

  Not "SAME": for a stride-2 convolution on an even size XLA's SAME pads (1, 2) where
  Torch pads (2, 2), which shifts every window by one pixel (46 -> 23 and 12 -> 6 in the
  feature adaption). Output sizes are the same for odd kernels.
  `conv`: a lax.conv_general_dilated replacement (rpsm_jax.convolution), None for lax's.
  Input (N, H, W, C_in) -> output (N, ceil(H/stride), ceil(W/stride), features).
  """
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: Any = jnp.float32
  initializer: str = "he"
  conv: Optional[Callable] = None

  @nn.compact
  def __call__(self, x):
    return Conv2D(self.features, self.kernel, self.stride, self.dtype,
                  relu_init(self.initializer), self.conv, relu=True, name="conv")(x)


def max_pool_2x2(x, ceil_mode: bool = False):
  """2x2/2 max-pool of (N, H, W, C). Ceil mode pads bottom/right with -inf as Torch does.

  rpsm_jax.pooling: the same values and gradients, with a cheaper gradient on CPU.
  """
  return pooling.max_pool_2x2(x, ceil_mode)
