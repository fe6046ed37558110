"""The stage-specialized 2D layers of the paper's 2D pose module."""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from rpsm_jax.models.layers import Convolution, ConvReLU


class StagePose2D(nn.Module):
  """Two 3x3 convolutions refining the shared features for one stage.

  Stage 1 sees the shared features alone (128 -> 128 -> 128); stage k > 1 sees
  concat(shared features, stage k-1's 2D features) (256 -> 128 -> 128).
  Inputs (N, h, w, C) each; output (N, h, w, features).
  """
  features: int
  dtype: Any = jnp.float32
  initializer: str = "he"
  conv: Optional[Convolution] = None     # see ConvReLU

  @nn.compact
  def __call__(self, shared, previous: Optional[jnp.ndarray] = None):
    x = shared if previous is None else jnp.concatenate([shared, previous], axis=-1)
    x = ConvReLU(self.features, dtype=self.dtype, initializer=self.initializer,
                 conv=self.conv, name="conv1")(x)
    return ConvReLU(self.features, dtype=self.dtype, initializer=self.initializer,
                    conv=self.conv, name="conv2")(x)
