"""RPSM in PyTorch: the architecture of rpsm_jax.models, for parity tests and benchmarks.

Written as a PyTorch user would write it (nn.Conv2d, nn.LSTM(batch_first=True),
nn.Sequential, NCHW tensors, optionally in channels_last memory format), and built from the
same `config.model` ConfigDict as the Flax model. `torch_to_flax` and `flax_to_torch` copy
weights between the two, so the same weights give the same poses (tests/tools/torch_port_test.py).

Layout differences the converters handle:
- Conv2d weight (O, I, kh, kw) <-> Flax kernel (kh, kw, I, O); Linear (out, in) <-> (in, out).
- The adaption FC flattens (C, h, w) here and (h, w, C) in Flax: its rows are permuted.
- nn.LSTM stacks the gates (i, f, g, o) in one matrix and has two biases (b_ih, b_hh); Flax
  has per-gate kernels and one bias per gate. The equations are the same
  (c' = f * c + i * g, h' = o * tanh(c')). This port keeps b_hh at zero and frozen, so both
  models have the same trainable parameters: with two live biases Adam would move their sum
  twice as far per step as Flax moves its one bias.

Only this module of rpsm_jax imports torch (the `torch` extra).
"""

import collections
import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils import checkpoint

from rpsm_jax.models.layers import scaled
from rpsm_jax.models.trunk import TRUNK_BLOCKS
from rpsm_jax.poses import INPUT_OFFSET, INPUT_SCALE

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _conv_out(size: int, kernel: int, stride: int) -> int:
  """Output size of a convolution padded by kernel // 2 (= ceil(size / stride))."""
  return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _pool_out(size: int, ceil_mode: bool) -> int:
  return -(-size // 2) if ceil_mode else size // 2


def _trunk_out(size: int) -> int:
  """Side of the trunk's features for an input side `size` (three floor-mode pools)."""
  for _ in TRUNK_BLOCKS[1:]:
    size = _pool_out(size, False)
  return size


class ConvReLU(nn.Sequential):
  """Conv2d padded by k // 2 (the authors' Torch 'pad') + ReLU. (N, C, H, W) in and out."""

  def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1):
    super().__init__(collections.OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2),
        relu=nn.ReLU(inplace=True)))


class Pose2DTrunk(nn.Sequential):
  """The shared CPM/VGG trunk: (N, 3, H, W) -> (N, 128 * width, H / 8, W / 8)."""

  def __init__(self, width: float = 1.0):
    layers = collections.OrderedDict()
    channels = 3
    for b, block in enumerate(TRUNK_BLOCKS):
      if b:
        layers[f"pool{b}"] = nn.MaxPool2d(2, 2)
      for c, out in enumerate(block):
        layers[f"conv{b + 1}_{c + 1}"] = ConvReLU(channels, scaled(out, width))
        channels = scaled(out, width)
    super().__init__(layers)
    self.out_channels = channels


class StagePose2D(nn.Module):
  """Two 3x3 ConvReLUs; input concat(shared, previous) on channels when `previous` is given.

  Inputs (N, C, h, w) each; output (N, features, h, w).
  """

  def __init__(self, in_channels: int, features: int):
    super().__init__()
    self.conv1 = ConvReLU(in_channels, features)
    self.conv2 = ConvReLU(features, features)

  def forward(self, shared, previous=None):
    x = shared if previous is None else torch.cat([shared, previous], dim=1)
    return self.conv2(self.conv1(x))


class FeatureAdaption(nn.Sequential):
  """2D features (N, C, h, w) -> (N, units); `paper` or `official` as in the Flax model."""

  def __init__(self, channels: int, side: int, units: int = 1024, variant: str = "paper"):
    layers = collections.OrderedDict()
    if variant == "paper":
      layers["conv1"] = ConvReLU(channels, channels, 5, 2)
      layers["pool1"] = nn.MaxPool2d(2, 2, ceil_mode=True)
      layers["conv2"] = ConvReLU(channels, channels, 5, 2)
      layers["pool2"] = nn.MaxPool2d(2, 2, ceil_mode=True)
      side = _pool_out(_conv_out(_pool_out(_conv_out(side, 5, 2), True), 5, 2), True)
    elif variant == "official":
      layers["conv1"] = ConvReLU(channels, channels, 5, 2)
      layers["conv2"] = ConvReLU(channels, channels, 3, 1)
      layers["pool"] = nn.MaxPool2d(2, 2, ceil_mode=True)
      side = _pool_out(_conv_out(side, 5, 2), True)
    else:
      raise ValueError(f"model.adaption must be one of ('paper', 'official'), "
                       f"got {variant!r}")
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(channels * side * side, units)
    layers["relu"] = nn.ReLU(inplace=True)
    super().__init__(layers)
    self.flat_shape = (channels, side, side)  # (C, h, w) the FC sees, for the converters


class PoseRecurrent3D(nn.Module):
  """(B, T, D) adapted features -> (B, T, 3 * num_joints) poses and the LSTM state.

  `lstm`: nn.LSTM scanned over the clip, zero state unless `state` ((1, B, units) h and c)
  is given. `dense`: Linear + ReLU per frame (the seq_1 ablation); the state is None.
  """

  def __init__(self, in_features: int, num_joints: int, units: int = 1024,
               temporal: str = "lstm"):
    super().__init__()
    if temporal == "lstm":
      self.lstm = nn.LSTM(in_features, units, batch_first=True)
      # One bias per gate, as in Flax (see the module docstring).
      self.lstm.bias_hh_l0.requires_grad_(False)
    elif temporal == "dense":
      self.dense = nn.Linear(in_features, units)
    else:
      raise ValueError(f"model.temporal must be one of ('lstm', 'dense'), got {temporal!r}")
    self.temporal = temporal
    self.pose = nn.Linear(units, 3 * num_joints)

  def forward(self, x, state=None):
    if self.temporal == "lstm":
      h, state = self.lstm(x, state)
    else:
      h, state = torch.relu(self.dense(x)), None
    return self.pose(h), state


class _Stage(nn.Module):
  """One stage's own modules (`pose2d` is None when the 2D layers are shared)."""

  def __init__(self, pose2d, adaption, recurrent):
    super().__init__()
    self.pose2d = pose2d
    self.adaption = adaption
    self.recurrent = recurrent


class TorchRPSM(nn.Module):
  """Recurrent 3D Pose Sequence Machine in PyTorch, the twin of rpsm_jax.models.RPSM.

  forward: (B, T, H, W, 3) frames (`model_input` of uint8 RGB) -> (K, B, T, P, 3) float32
  poses of every stage, plus the per-stage LSTM states when `return_states`.
  """

  def __init__(self, num_stages: int = 3, num_joints: int = 17, input_size: int = 368,
               width: float = 1.0, adaption: str = "paper", adaption_units: int = 1024,
               temporal: str = "lstm", lstm_units: int = 1024, share_2d: bool = False,
               remat_trunk: bool = False, dtype: str = "float32",
               channels_last: bool = False, initializer: str = "he",
               lstm_forget_bias: float = 0.0, residual_stages: bool = False):
    super().__init__()
    if dtype not in _DTYPES:
      raise ValueError(f"config.model.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    self.num_stages, self.num_joints = num_stages, num_joints
    self.share_2d, self.remat_trunk = share_2d, remat_trunk
    self.dtype = _DTYPES[dtype]
    self.channels_last = channels_last
    self.initializer = initializer
    self.lstm_forget_bias = lstm_forget_bias
    self.residual_stages = residual_stages

    self.trunk = Pose2DTrunk(width)
    shared_ch = self.trunk.out_channels
    features = scaled(128, width)
    side = _trunk_out(input_size)
    # Shared 2D layers see zeros as stage 1's previous features: one input width for all.
    self.shared_pose2d = (StagePose2D(shared_ch + features, features) if share_2d
                          else None)
    self.stages = nn.ModuleList()
    for k in range(1, num_stages + 1):
      pose2d = None if share_2d else StagePose2D(
          shared_ch + (features if k > 1 else 0), features)
      recurrent_in = adaption_units + (3 * num_joints if k > 1 else 0)
      self.stages.append(_Stage(
          pose2d, FeatureAdaption(features, side, adaption_units, adaption),
          PoseRecurrent3D(recurrent_in, num_joints, lstm_units, temporal)))
    self.reset_parameters()
    if channels_last:
      self.to(memory_format=torch.channels_last)

  @classmethod
  def from_config(cls, model_config, channels_last: bool = False) -> "TorchRPSM":
    """Builds the model from `config.model` (see configs/default.py)."""
    return cls(num_stages=model_config.num_stages, num_joints=model_config.num_joints,
               input_size=model_config.input_size, width=model_config.width,
               adaption=model_config.adaption, adaption_units=model_config.adaption_units,
               temporal=model_config.temporal, lstm_units=model_config.lstm_units,
               share_2d=model_config.share_2d, remat_trunk=model_config.remat_trunk,
               dtype=model_config.dtype, channels_last=channels_last,
               initializer=model_config.initializer,
               lstm_forget_bias=model_config.get("lstm_forget_bias", 0.0),
               residual_stages=model_config.get("residual_stages", False))

  @torch.no_grad()
  def reset_parameters(self):
    """The Flax model's initialisers, so fresh models of both are drawn alike.

    Conv/Linear followed by ReLU: He normal (initializer="he", truncated at 2 std as
    Flax's) or Xavier uniform ("xavier"); pose read-outs: Xavier uniform; zero biases. LSTM: per
    gate, truncated LeCun normal input kernels and orthogonal recurrent kernels, zero biases
    but the forget gate's, lstm_forget_bias (on b_hh: Flax's bias is b_ih + b_hh).
    With residual_stages the read-outs of stages k > 1 start at zero.
    """
    if self.initializer not in ("he", "xavier"):
      raise ValueError("config.model.initializer must be one of ('he', 'xavier'), "
                       f"got {self.initializer!r}")
    readouts = {id(m.pose) for m in self.modules() if isinstance(m, PoseRecurrent3D)}
    for m in self.modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        if self.initializer == "he" and id(m) not in readouts:
          fan_in = m.weight[0].numel()
          std = math.sqrt(2.0 / fan_in) / .87962566103423978
          nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        else:
          nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
      elif isinstance(m, nn.LSTM):
        units = m.hidden_size
        # Flax's lecun_normal: variance 1 / fan_in of a normal truncated at 2 std.
        std = math.sqrt(1.0 / m.input_size) / .87962566103423978
        for gate in range(4):
          rows = slice(gate * units, (gate + 1) * units)
          nn.init.trunc_normal_(m.weight_ih_l0[rows], std=std, a=-2 * std, b=2 * std)
          nn.init.orthogonal_(m.weight_hh_l0[rows])
        nn.init.zeros_(m.bias_ih_l0)
        nn.init.zeros_(m.bias_hh_l0)
        m.bias_hh_l0[units:2 * units] = self.lstm_forget_bias
    if self.residual_stages:
      for stage in self.stages[1:]:
        nn.init.zeros_(stage.recurrent.pose.weight)

  def forward(self, frames, states: Optional[Sequence] = None,
              return_states: bool = False):
    """Runs all stages on (B, T, H, W, 3) frames; `states` as returned before (streaming)."""
    b, t = frames.shape[:2]
    # (B*T, H, W, 3) permuted to NCHW is already channels_last in memory.
    x = frames.reshape((b * t,) + tuple(frames.shape[2:])).permute(0, 3, 1, 2)
    x = x.contiguous(memory_format=torch.channels_last if self.channels_last
                     else torch.contiguous_format)
    with torch.autocast(x.device.type, dtype=torch.bfloat16,
                        enabled=self.dtype == torch.bfloat16):
      if self.remat_trunk and torch.is_grad_enabled():
        shared = checkpoint.checkpoint(self.trunk, x, use_reentrant=False)
      else:
        shared = self.trunk(x)
      feats_2d, pose, poses, new_states = None, None, [], []
      for k, stage in enumerate(self.stages):
        if self.shared_pose2d is not None:
          previous = torch.zeros_like(shared) if feats_2d is None else feats_2d
          feats_2d = self.shared_pose2d(shared, previous)
        else:
          feats_2d = stage.pose2d(shared, feats_2d)
        adapted = stage.adaption(feats_2d).reshape(b, t, -1)
        inputs = adapted if pose is None else torch.cat(
            [adapted, pose.to(adapted.dtype)], dim=-1)
        out, state = stage.recurrent(inputs, None if states is None else states[k])
        pose = pose + out if self.residual_stages and pose is not None else out
        poses.append(pose.reshape(b, t, self.num_joints, 3))
        new_states.append(state)
    out = torch.stack(poses).float()
    return (out, new_states) if return_states else out


# The train step's inputs and loss, the twins of rpsm_jax.poses.model_input and
# rpsm_jax.training.train.pose_loss (tests/tools/torch_port_test.py checks they agree).


def model_input(image: torch.Tensor) -> torch.Tensor:
  """uint8 (..., H, W, 3) -> float32 model input, scaled as rpsm_jax.poses.model_input."""
  return image.float() * INPUT_SCALE + INPUT_OFFSET


def pose_loss(predicted: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
              weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
  """Sum over stages k of alpha_k * sum over frames of the squared L2 pose error.

  predicted (K, B, T, P, 3); targets (B, T, P, 3); mask (B, T) float; weights (K,).
  Normalised coordinates. Returns (mean over clips of the weighted sum, per-stage (K,)).
  """
  sq = ((predicted - targets[None]) ** 2).sum(dim=(-2, -1)) * mask[None]   # (K, B, T)
  per_stage = sq.sum(dim=-1).mean(dim=-1)                                  # (K,)
  return (weights * per_stage).sum(), per_stage


# Weight conversion between the torch modules and the Flax parameter tree.


def _module_map(model: TorchRPSM) -> dict:
  """Flax module path -> the torch module holding its weights.

  The adaption FC maps to its FeatureAdaption, whose `flat_shape` the converters need.
  """
  out = {}
  for b, block in enumerate(TRUNK_BLOCKS):
    for c in range(len(block)):
      name = f"conv{b + 1}_{c + 1}"
      out[("trunk", name, "conv")] = getattr(model.trunk, name).conv
  pose2d = [("shared_pose2d", model.shared_pose2d)] if model.share_2d else [
      (f"stage{k + 1}_pose2d", s.pose2d) for k, s in enumerate(model.stages)]
  for name, module in pose2d:
    out[(name, "conv1", "conv")] = module.conv1.conv
    out[(name, "conv2", "conv")] = module.conv2.conv
  for k, stage in enumerate(model.stages):
    prefix = f"stage{k + 1}"
    out[(f"{prefix}_adaption", "conv1", "conv")] = stage.adaption.conv1.conv
    out[(f"{prefix}_adaption", "conv2", "conv")] = stage.adaption.conv2.conv
    out[(f"{prefix}_adaption", "fc")] = stage.adaption
    rec = stage.recurrent
    if rec.temporal == "lstm":
      out[(f"{prefix}_recurrent", "lstm")] = rec.lstm
    else:
      out[(f"{prefix}_recurrent", "dense")] = rec.dense
    out[(f"{prefix}_recurrent", "pose")] = rec.pose
  return out


def _nested(flat: dict) -> dict:
  tree = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def _np(t) -> np.ndarray:
  return t.detach().float().cpu().numpy()


def _fc_rows_to_hwc(weight, chw) -> np.ndarray:
  """(out, C*h*w) Linear weight -> (h*w*C, out) Flax kernel of the NHWC flatten."""
  c, h, w = chw
  return np.ascontiguousarray(
      _np(weight).reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1))


def torch_to_flax(torch_model: TorchRPSM, grads: bool = False) -> dict:
  """The model's weights (or, with `grads`, their .grad) as a Flax `params` tree.

  Returns nested dicts of float32 numpy arrays with the names and shapes of
  `create_model(config.model).init(...)['params']`. An LSTM gate's Flax bias is
  b_ih + b_hh; its gradient is b_ih's gradient (both get the same one).
  """
  get = (lambda p: p.grad if p.grad is not None else torch.zeros_like(p)) if grads else (
      lambda p: p)
  flat = {}
  for path, m in _module_map(torch_model).items():
    if isinstance(m, nn.Conv2d):
      flat[path + ("kernel",)] = _np(get(m.weight)).transpose(2, 3, 1, 0)
      flat[path + ("bias",)] = _np(get(m.bias))
    elif isinstance(m, FeatureAdaption):
      flat[path + ("kernel",)] = _fc_rows_to_hwc(get(m.fc.weight), m.flat_shape)
      flat[path + ("bias",)] = _np(get(m.fc.bias))
    elif isinstance(m, nn.Linear):
      flat[path + ("kernel",)] = _np(get(m.weight)).T
      flat[path + ("bias",)] = _np(get(m.bias))
    else:  # nn.LSTM, gates stacked (i, f, g, o) along rows.
      w_ih, w_hh = _np(get(m.weight_ih_l0)), _np(get(m.weight_hh_l0))
      bias = _np(get(m.bias_ih_l0)) if grads else _np(m.bias_ih_l0) + _np(m.bias_hh_l0)
      for gate, (wi, wh, b) in zip("ifgo", zip(np.split(w_ih, 4), np.split(w_hh, 4),
                                              np.split(bias, 4))):
        flat[path + (f"i{gate}", "kernel")] = wi.T
        flat[path + (f"h{gate}", "kernel")] = wh.T
        flat[path + (f"h{gate}", "bias")] = b
  return _nested({k: np.ascontiguousarray(v, np.float32) for k, v in flat.items()})


@torch.no_grad()
def flax_to_torch(params, torch_model: TorchRPSM) -> TorchRPSM:
  """Copies a Flax `params` tree into `torch_model` in place (and returns it).

  The tree must have exactly the names and shapes `torch_to_flax(torch_model)` gives.
  Each LSTM gate's bias goes to b_ih, zeros to b_hh.
  """
  expected = torch_to_flax(torch_model)

  def leaf(path):
    node, want = params, expected
    for key in path:
      node, want = node[key], want[key]
    value = np.asarray(node, np.float32)
    if value.shape != want.shape:
      raise ValueError(f"{'/'.join(path)}: shape {value.shape}, expected {want.shape}")
    return value

  def check_names(node, want, path=()):
    if isinstance(want, dict):
      if set(node) != set(want):
        raise ValueError(f"{'/'.join(path) or 'params'}: keys {sorted(node)}, "
                         f"expected {sorted(want)}")
      for key in want:
        check_names(node[key], want[key], path + (key,))

  check_names(params, expected)

  def put(tensor, value):
    tensor.copy_(torch.tensor(value, dtype=tensor.dtype))

  for path, m in _module_map(torch_model).items():
    if isinstance(m, nn.Conv2d):
      put(m.weight, leaf(path + ("kernel",)).transpose(3, 2, 0, 1))
      put(m.bias, leaf(path + ("bias",)))
    elif isinstance(m, FeatureAdaption):
      c, h, w = m.flat_shape
      kernel = leaf(path + ("kernel",)).reshape(h, w, c, -1).transpose(3, 2, 0, 1)
      put(m.fc.weight, kernel.reshape(-1, c * h * w))
      put(m.fc.bias, leaf(path + ("bias",)))
    elif isinstance(m, nn.Linear):
      put(m.weight, leaf(path + ("kernel",)).T)
      put(m.bias, leaf(path + ("bias",)))
    else:
      put(m.weight_ih_l0, np.concatenate([leaf(path + (f"i{g}", "kernel")).T
                                          for g in "ifgo"]))
      put(m.weight_hh_l0, np.concatenate([leaf(path + (f"h{g}", "kernel")).T
                                          for g in "ifgo"]))
      put(m.bias_ih_l0, np.concatenate([leaf(path + (f"h{g}", "bias")) for g in "ifgo"]))
      m.bias_hh_l0.zero_()
  return torch_model
