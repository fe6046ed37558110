"""The shared 2D trunk: the CPM stage-1 VGG layers of the paper's Table 1."""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from rpsm_jax.models.layers import Convolution, ConvReLU, max_pool_2x2, scaled

# Channels of the 15 3x3 convolutions, one tuple per resolution; a 2x2/2 max-pool separates
# consecutive blocks (three pools: 368 -> 46).
TRUNK_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256),
                (512, 512, 256, 256, 256, 256, 128))


class Pose2DTrunk(nn.Module):
  """Shared 2D feature extractor, run once per frame and reused by every stage.

  Input (N, H, W, 3) images; output (N, H/8, W/8, 128 * width) features.
  """
  width: float = 1.0
  dtype: Any = jnp.float32
  initializer: str = "he"
  conv: Optional[Convolution] = None     # see ConvReLU

  @nn.compact
  def __call__(self, x):
    for b, block in enumerate(TRUNK_BLOCKS):
      if b:
        x = max_pool_2x2(x)
      for c, channels in enumerate(block):
        x = ConvReLU(scaled(channels, self.width), dtype=self.dtype,
                     initializer=self.initializer, conv=self.conv,
                     name=f"conv{b + 1}_{c + 1}")(x)
    return x
