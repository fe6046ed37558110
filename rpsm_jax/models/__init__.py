"""RPSM modules: the shared 2D trunk, stage 2D layers, feature adaption, 3D recurrent."""

from typing import Optional

import jax.numpy as jnp

from rpsm_jax.models.adaption import FeatureAdaption
from rpsm_jax.models.layers import Convolution
from rpsm_jax.models.pose2d import StagePose2D
from rpsm_jax.models.recurrent import PoseRecurrent3D, zero_carry
from rpsm_jax.models.rpsm import RPSM, trunk_of
from rpsm_jax.models.trunk import Pose2DTrunk

__all__ = ["Convolution", "DTYPES", "FeatureAdaption", "Pose2DTrunk", "PoseRecurrent3D", "RPSM",
           "StagePose2D", "create_model", "trunk_of", "zero_carry"]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(model_config, convolution: Optional[Convolution] = None) -> RPSM:
  """Builds the RPSM from `config.model` (see configs/default.py).

  convolution: what every convolution layer runs (None: lax's). model_factory.create_model
  chooses it from config.model.conv_algorithm and the backend.
  """
  if model_config.dtype not in DTYPES:
    raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, "
                     f"got {model_config.dtype!r}")
  return RPSM(
      num_stages=model_config.num_stages,
      num_joints=model_config.num_joints,
      width=model_config.width,
      adaption=model_config.adaption,
      adaption_units=model_config.adaption_units,
      temporal=model_config.temporal,
      lstm_units=model_config.lstm_units,
      lstm_forget_bias=model_config.get("lstm_forget_bias", 0.0),
      share_2d=model_config.share_2d,
      residual_stages=model_config.get("residual_stages", False),
      remat_trunk=model_config.remat_trunk,
      initializer=model_config.initializer,
      conv=convolution,
      dtype=DTYPES[model_config.dtype])
