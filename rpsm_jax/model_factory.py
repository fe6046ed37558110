"""The RPSM a config describes, with the convolutions chosen for the backend it runs on."""

from typing import Optional

from rpsm_jax import models
from rpsm_jax.cpu import convolution


def create_model(model_config, backend: Optional[str] = None) -> models.RPSM:
  """models.create_model with config.model.conv_algorithm's convolution.

  backend: the platform the model will run on (default: JAX's default backend). On GPUs
  and TPUs "auto" and "direct" give lax's convolutions, and no CPU library is loaded.
  """
  # .get: the config.json of runs saved before these fields existed.
  conv = convolution.make_conv(model_config.get("conv_algorithm", "auto"),
                               model_config.get("winograd_tile", 0), backend=backend)
  return models.create_model(model_config, conv)
