"""The 3D pose module: an LSTM over the frames of a clip and a linear pose read-out."""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from rpsm_jax.models.layers import output_init, relu_init

TEMPORAL = ("lstm", "dense")

_GATES = ("i", "f", "g", "o")  # input, forget, cell candidate, output


class _GateWeights(nn.Module):
  """One gate's kernel (D, units) and, with `use_bias`, its bias (units,)."""
  features: int
  use_bias: bool
  kernel_init: Callable
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    return kernel, bias


def _gate_weights(features: int, forget_bias: float):
  """The gate kernels of an LSTM of `features` cells: 'ii'..'io' on the input (Lecun
  normal, no bias) and 'hi'..'ho' on h (orthogonal, with biases; the forget gate's bias
  starts at `forget_bias`). Call from setup()."""
  zeros = nn.initializers.zeros_init()
  on_x = [_GateWeights(features, False, nn.initializers.lecun_normal(), name=f"i{g}")
          for g in _GATES]
  on_h = [_GateWeights(features, True, nn.initializers.orthogonal(),
                       nn.initializers.constant(forget_bias) if g == "f" else zeros,
                       name=f"h{g}") for g in _GATES]
  return on_x, on_h


def _fused(gates, x, dtype):
  """The gates' kernels side by side, (D, 4 units), and biases (4 units,) or None."""
  kernels, biases = zip(*[gate(x) for gate in gates])
  bias = None if biases[0] is None else jnp.concatenate(biases).astype(dtype)
  return jnp.concatenate(kernels, -1).astype(dtype), bias


def _update(z, c):
  """Pre-activations z (B, 4 units) in gate order i, f, g, o and cell c -> (c', h')."""
  i, f, g, o = jnp.split(z, 4, axis=-1)
  new_c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
  return new_c, nn.sigmoid(o) * jnp.tanh(new_c)


class LSTMCell(nn.Module):
  """An LSTM step (no peepholes) whose forget gate's bias starts at `forget_bias`.

  flax.linen.OptimizedLSTMCell's parameters, names and initialisers (gate kernels
  'ii'..'io' on the input, Lecun normal; 'hi'..'ho' with biases on h, orthogonal), so
  checkpoints and the Torch port's mapping carry over; with forget_bias 0 the two are
  the same function from the same initial weights. Flax gives every gate one bias
  initialiser, hence this cell: a forget bias of 1 keeps the cell state through a clip
  early in training (Gers et al. 2000; Jozefowicz et al. 2015).
  Carry (c, h), each (B, units); input (B, D); output h (B, units).
  """
  features: int
  forget_bias: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    self.on_x, self.on_h = _gate_weights(self.features, self.forget_bias)

  def __call__(self, carry, x):
    c, h = carry
    w_h, b_h = _fused(self.on_h, h, self.dtype)
    w_x, _ = _fused(self.on_x, x, self.dtype)
    # Summed in Flax's order, (h W_h + b) + x W_x, so results match it bit for bit.
    z = (h.astype(self.dtype) @ w_h + b_h) + x.astype(self.dtype) @ w_x
    new_c, new_h = _update(z, c)
    return (new_c, new_h), new_h


class LSTM(nn.Module):
  """LSTMCell over the frames of a clip, with `nn.scan`: carry ((B, units), (B, units))
  and input (B, T, D) -> (carry, h (B, T, units)).

  LSTMCell's parameters and function (equal up to float rounding), but the input
  projection x W_x of every frame is one matmul ahead of the recurrence, which then only
  multiplies h by W_h. Both inside the scan made the LSTMs half of a configs/synthetic.py
  training step on CPU, mostly the per-iteration cost of small ops; hoisted, the step is
  about 1.4x faster (2-core AVX-512 EPYC, 2026-12-07).
  """
  features: int
  forget_bias: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    self.on_x, self.on_h = _gate_weights(self.features, self.forget_bias)

  def __call__(self, carry, x):
    w_h, b_h = _fused(self.on_h, carry[1], self.dtype)
    w_x, _ = _fused(self.on_x, x, self.dtype)
    x_proj = x.astype(self.dtype) @ w_x                              # (B, T, 4 units)

    def step(module, carry, xw):
      del module  # the weights are closed over: fetched once, not per frame
      c, h = carry
      new_c, new_h = _update((h.astype(self.dtype) @ w_h + b_h) + xw, c)
      return (new_c, new_h), new_h

    return nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1)(self, carry, x_proj)


class PoseRecurrent3D(nn.Module):
  """Regresses a 3D pose per frame from a clip of adapted features.

  `lstm`: one LSTM layer of `units` cells (no peepholes) scanned over frames; its state is
  zero at the start of each clip unless `carry` is given (streaming). `dense`: the paper's
  seq_1 ablation, a Dense layer of `units` + ReLU with no dependency across frames.
  forget_bias: the LSTM forget gate's initial bias (LSTMCell).
  zero_readout: the pose read-out's kernel starts at zero (a residual stage, RPSM).
  Input (B, T, D); output (B, T, num_joints * 3) in normalised coordinates, and the final
  LSTM carry ((B, units), (B, units)) (None for `dense`).
  """
  num_joints: int
  units: int = 1024
  temporal: str = "lstm"
  dtype: Any = jnp.float32
  initializer: str = "he"
  forget_bias: float = 0.0
  zero_readout: bool = False

  @nn.compact
  def __call__(self, x, carry: Optional[tuple] = None):
    if self.temporal == "lstm":
      if carry is None:
        carry = zero_carry(x.shape[0], self.units)
      carry, h = LSTM(self.units, self.forget_bias, self.dtype, name="lstm")(carry, x)
    elif self.temporal == "dense":
      h = nn.relu(nn.Dense(self.units, dtype=self.dtype,
                           kernel_init=relu_init(self.initializer), name="dense")(x))
      carry = None
    else:
      raise ValueError(f"model.temporal must be one of {TEMPORAL}, got {self.temporal!r}")
    kernel_init = nn.initializers.zeros_init() if self.zero_readout else output_init
    out = nn.Dense(self.num_joints * 3, dtype=self.dtype, kernel_init=kernel_init,
                   name="pose")(h)
    return out, carry


def zero_carry(batch: int, units: int) -> tuple[jax.Array, jax.Array]:
  """The LSTM state at the start of a clip: (c, h), each (batch, units)."""
  zeros = jnp.zeros((batch, units), jnp.float32)
  return zeros, zeros
