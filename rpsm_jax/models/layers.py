"""Small building blocks shared by the RPSM modules."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# The paper initialises with Xavier (the authors' Lua code leaves the framework default).
kernel_init = nn.initializers.xavier_uniform()


def scaled(channels: int, width: float) -> int:
  """Channel count under the width multiplier, at least 8 so tiny configs stay valid."""
  return max(8, int(round(channels * width)))


class ConvReLU(nn.Module):
  """Convolution (SAME padding, i.e. pad (k-1)/2 as in the authors' code) + ReLU.

  Input (N, H, W, C_in) -> output (N, ceil(H/stride), ceil(W/stride), features).
  """
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                padding="SAME", dtype=self.dtype, kernel_init=kernel_init, name="conv")(x)
    return nn.relu(x)


def max_pool_2x2(x, ceil_mode: bool = False):
  """2x2/2 max-pool of (N, H, W, C). Ceil mode pads bottom/right with -inf as Torch does."""
  pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2)) if ceil_mode else ((0, 0), (0, 0))
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=pad)
