"""The 3D pose module: an LSTM over the frames of a clip and a linear pose read-out."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from rpsm_jax.models.layers import output_init, relu_init

TEMPORAL = ("lstm", "dense")

# One LSTM step applied along axis 1 (time) of (B, T, D); weights shared by every frame.
_ScanLSTM = nn.scan(nn.OptimizedLSTMCell, variable_broadcast="params",
                    split_rngs={"params": False}, in_axes=1, out_axes=1)


class PoseRecurrent3D(nn.Module):
  """Regresses a 3D pose per frame from a clip of adapted features.

  `lstm`: one LSTM layer of `units` cells (no peepholes) scanned over frames; its state is
  zero at the start of each clip unless `carry` is given (streaming). `dense`: the paper's
  seq_1 ablation, a Dense layer of `units` + ReLU with no dependency across frames.
  Input (B, T, D); output (B, T, num_joints * 3) in normalised coordinates, and the final
  LSTM carry ((B, units), (B, units)) (None for `dense`).
  """
  num_joints: int
  units: int = 1024
  temporal: str = "lstm"
  dtype: Any = jnp.float32
  initializer: str = "he"

  @nn.compact
  def __call__(self, x, carry: Optional[tuple] = None):
    if self.temporal == "lstm":
      if carry is None:
        carry = zero_carry(x.shape[0], self.units)
      carry, h = _ScanLSTM(self.units, dtype=self.dtype, name="lstm")(carry, x)
    elif self.temporal == "dense":
      h = nn.relu(nn.Dense(self.units, dtype=self.dtype,
                           kernel_init=relu_init(self.initializer), name="dense")(x))
      carry = None
    else:
      raise ValueError(f"model.temporal must be one of {TEMPORAL}, got {self.temporal!r}")
    out = nn.Dense(self.num_joints * 3, dtype=self.dtype, kernel_init=output_init,
                   name="pose")(h)
    return out, carry


def zero_carry(batch: int, units: int) -> tuple[jax.Array, jax.Array]:
  """The LSTM state at the start of a clip: (c, h), each (batch, units)."""
  zeros = jnp.zeros((batch, units), jnp.float32)
  return zeros, zeros
