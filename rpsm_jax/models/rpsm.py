"""RPSM: the multi-stage model of the paper's Figure 3."""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from rpsm_jax.models.adaption import FeatureAdaption
from rpsm_jax.models.layers import Convolution, scaled
from rpsm_jax.models.pose2d import StagePose2D
from rpsm_jax.models.recurrent import PoseRecurrent3D
from rpsm_jax.models.trunk import Pose2DTrunk


class RPSM(nn.Module):
  """Recurrent 3D Pose Sequence Machine.

  The shared trunk runs once per frame (frames folded into the batch) and feeds every stage.
  Stage k has its own 2D layers (input: shared features, plus stage k-1's 2D features for
  k > 1), feature adaption and LSTM + read-out (input: adapted features, plus stage k-1's
  pose for k > 1). With `share_2d` one set of 2D layers serves every stage (the paper's
  sharing ablation); stage 1 then sees zeros in place of the previous 2D features so every
  stage has the same input width. With `residual_stages` stage k > 1 outputs stage k-1's
  pose plus its read-out, whose kernel starts at zero: each later stage starts as the
  identity of the one before and learns a correction (not in the paper; an option).

  Attributes mirror `config.model` (see configs/default.py).
  """
  num_stages: int = 3
  num_joints: int = 17
  width: float = 1.0
  adaption: str = "paper"
  adaption_units: int = 1024
  temporal: str = "lstm"
  lstm_units: int = 1024
  lstm_forget_bias: float = 0.0
  share_2d: bool = False
  residual_stages: bool = False
  remat_trunk: bool = False
  dtype: Any = jnp.float32
  initializer: str = "he"
  conv: Optional[Convolution] = None     # None: lax's (layers.Convolution)

  @nn.compact
  def __call__(self, frames, carries: Optional[Sequence[tuple]] = None,
               return_carries: bool = False, trunk_features=None):
    """Runs all stages on a batch of clips.

    Args:
      frames: (B, T, H, W, 3) images, RGB in [0, 1] minus 0.5 as the authors feed them;
        None when `trunk_features` is given.
      carries: optional per-stage LSTM states from the previous clip of a stream; None
        starts every clip from zero state (training and evaluation).
      return_carries: also return the per-stage final LSTM states.
      trunk_features: optional (B, T, H/8, W/8, C) output of the trunk (`trunk_of`) for
        these frames, computed earlier (a frozen trunk's cache, training/trunk_cache.py):
        the trunk is not run.

    Returns:
      (K, B, T, num_joints, 3) float32 poses of every stage in normalised coordinates, and
      the list of per-stage carries when `return_carries`.
    """
    if trunk_features is not None:
      b, t = trunk_features.shape[:2]
      shared = trunk_features.reshape((b * t,) + trunk_features.shape[2:]).astype(self.dtype)
    else:
      b, t = frames.shape[:2]
      x = frames.reshape((b * t,) + frames.shape[2:]).astype(self.dtype)
      trunk = nn.remat(Pose2DTrunk) if self.remat_trunk else Pose2DTrunk
      shared = trunk(self.width, self.dtype, self.initializer, self.conv, name="trunk")(x)

    features = scaled(128, self.width)
    shared_2d = (StagePose2D(features, self.dtype, self.initializer, self.conv,
                             name="shared_pose2d") if self.share_2d else None)
    feats_2d, pose, poses, new_carries = None, None, [], []
    for k in range(1, self.num_stages + 1):
      if shared_2d is not None:
        previous = jnp.zeros_like(shared) if feats_2d is None else feats_2d
        feats_2d = shared_2d(shared, previous)
      else:
        feats_2d = StagePose2D(features, self.dtype, self.initializer, self.conv,
                               name=f"stage{k}_pose2d")(shared, feats_2d)
      adapted = FeatureAdaption(features, self.adaption_units, self.adaption, self.dtype,
                                self.initializer, self.conv, name=f"stage{k}_adaption")(feats_2d)
      adapted = adapted.reshape(b, t, -1)
      inputs = adapted if pose is None else jnp.concatenate(
          [adapted, pose.astype(adapted.dtype)], axis=-1)
      residual = self.residual_stages and pose is not None
      out, carry = PoseRecurrent3D(
          self.num_joints, self.lstm_units, self.temporal, self.dtype, self.initializer,
          self.lstm_forget_bias, zero_readout=residual, name=f"stage{k}_recurrent")(
              inputs, None if carries is None else carries[k - 1])
      pose = pose + out if residual else out
      poses.append(pose.reshape(b, t, self.num_joints, 3))
      new_carries.append(carry)
    out = jnp.stack(poses).astype(jnp.float32)
    return (out, new_carries) if return_carries else out


def trunk_of(model: RPSM) -> Pose2DTrunk:
  """The trunk `model` runs, on its own: apply it with params["trunk"] to (N, H, W, 3)."""
  return Pose2DTrunk(model.width, model.dtype, model.initializer, model.conv)
