"""The feature adaption module: 2D features -> a vector for the 3D module."""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from rpsm_jax.models.layers import Convolution, ConvReLU, max_pool_2x2, relu_init

VARIANTS = ("paper", "official")


class FeatureAdaption(nn.Module):
  """Adapts one frame's 2D features for 3D pose regression.

  `paper` (Sec. 3.2): two 5x5/2 convolutions of `channels` kernels, each followed by a
  ceil-mode 2x2/2 max-pool (46 -> 23 -> 12 -> 6 -> 3), then Dense `units` + ReLU.
  `official` (authors' code): 5x5/2 conv (46 -> 23), 3x3/1 conv, one ceil-mode 2x2 max-pool
  (-> 12), Dense `units` + ReLU.
  Input (N, h, w, C); output (N, units).
  """
  channels: int
  units: int = 1024
  variant: str = "paper"
  dtype: Any = jnp.float32
  initializer: str = "he"
  conv: Optional[Convolution] = None     # see ConvReLU

  @nn.compact
  def __call__(self, x):
    def conv(kernel, stride, name):
      return ConvReLU(self.channels, kernel, stride, self.dtype, self.initializer, self.conv,
                      name=name)

    if self.variant == "paper":
      x = max_pool_2x2(conv(5, 2, "conv1")(x), True)
      x = max_pool_2x2(conv(5, 2, "conv2")(x), True)
    elif self.variant == "official":
      x = conv(5, 2, "conv1")(x)
      x = max_pool_2x2(conv(3, 1, "conv2")(x), True)
    else:
      raise ValueError(f"model.adaption must be one of {VARIANTS}, got {self.variant!r}")
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.units, dtype=self.dtype, kernel_init=relu_init(self.initializer),
                 name="fc")(x)
    return nn.relu(x)
