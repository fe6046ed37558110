"""Initialising the shared 2D trunk: VGG-19 ImageNet weights or another run's trunk.

The trunk is CPM's stage-1 VGG network (models/trunk.py): its first ten convolutions,
conv1_1 to conv4_2, are VGG-19's first ten, which CPM initialised from ImageNet; conv4_3
to conv4_7 are CPM's own. `load_vgg19_trunk` fills those ten from a torchvision VGG-19
`state_dict` file (`torch.save(torchvision.models.vgg19(weights=...).state_dict(), path)`)
and leaves the rest as initialised. `merge_trunk` and `load_checkpoint_trunk` copy a
whole trunk from another run's parameters (e.g. one pretrained on MPII heatmaps).
`initialize_trunk` is the one entry point a config string selects.
"""

import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rpsm_jax import workdir as workdir_lib
from rpsm_jax.training import checkpoints

# Flax trunk layer -> index in torchvision's `vgg19().features` (Sequential: conv, ReLU,
# and max-pools at 4, 9, 18, 27, 36).
VGG19_FEATURES = {
    "conv1_1": 0, "conv1_2": 2,
    "conv2_1": 5, "conv2_2": 7,
    "conv3_1": 10, "conv3_2": 12, "conv3_3": 14, "conv3_4": 16,
    "conv4_1": 19, "conv4_2": 21,
}
# torchvision's ImageNet input normalisation (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What the model is fed: RGB in [0, 1] minus this (models/rpsm.py, the authors' input).
MODEL_INPUT_OFFSET = 0.5

Params = Any


class PretrainedError(ValueError):
  """A weights file or checkpoint that does not fit the trunk."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torch `state_dict` file as float32 numpy arrays (also {'state_dict': ...})."""
  import torch  # pylint: disable=g-import-not-at-top  # Only this path needs torch.
  if not os.path.isfile(path):
    raise PretrainedError(f"missing weights file {path}")
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # Not a torch file, truncated: several kinds.
    raise PretrainedError(f"{path}: unreadable torch file ({type(e).__name__}: {e})") from e
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise PretrainedError(f"{path}: holds {type(state).__name__}, expected a state_dict")
  return {k: v.detach().float().numpy() for k, v in state.items()
          if isinstance(v, torch.Tensor)}


def vgg19_trunk_layers(state: dict[str, np.ndarray], source: str = "state_dict",
                       fold_imagenet_normalization: bool = True) -> dict:
  """The ten VGG-19 convolutions as Flax trunk layers.

  Args:
    state: torchvision VGG-19 state_dict, numpy.
    source: names the file in errors.
    fold_imagenet_normalization: VGG-19 was trained on (x - mean) / std, the model is fed
      x - 0.5 (x in [0, 1]); fold the difference into conv1_1 (kernel / std, bias +
      kernel . (0.5 - mean) / std). Exact except where conv1_1's zero padding touches
      the image border.

  Returns:
    {'conv1_1': {'conv': {'kernel': (3, 3, Cin, Cout), 'bias': (Cout,)}}, ...} float32.

  Raises:
    PretrainedError: keys missing or shapes not VGG-19's.
  """
  wanted = [f"features.{i}.{p}" for i in VGG19_FEATURES.values() for p in ("weight", "bias")]
  missing = [k for k in wanted if k not in state]
  if missing:
    raise PretrainedError(f"{source}: not a torchvision VGG-19 state_dict: missing keys "
                          f"{missing}")
  layers, cin = {}, 3
  for name, index in VGG19_FEATURES.items():
    weight, bias = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
    cout = weight.shape[0] if weight.ndim else 0
    if weight.shape != (cout, cin, 3, 3) or bias.shape != (cout,) or not cout:
      raise PretrainedError(
          f"{source}: features.{index} (for {name}) has weight {weight.shape} and bias "
          f"{bias.shape}, expected (Cout, {cin}, 3, 3) and (Cout,) as in VGG-19")
    kernel = weight.transpose(2, 3, 1, 0)  # torch (Cout, Cin, kh, kw) -> (kh, kw, Cin, Cout).
    if name == "conv1_1" and fold_imagenet_normalization:
      std = np.asarray(IMAGENET_STD, np.float32)[:, None]
      shift = (MODEL_INPUT_OFFSET - np.asarray(IMAGENET_MEAN, np.float32)) / std[:, 0]
      bias = bias + np.einsum("hwio,i->o", kernel, shift)
      kernel = kernel / std
    layers[name] = {"conv": {"kernel": kernel.astype(np.float32),
                             "bias": bias.astype(np.float32)}}
    cin = cout
  return layers


def _replace_trunk_layers(params: Params, layers: dict, source: str,
                          hint: str = "") -> Params:
  """params with params['trunk'][name] replaced by layers[name]; shapes must match."""
  if "trunk" not in params:
    raise PretrainedError(f"the parameters have no 'trunk' (top-level keys "
                          f"{sorted(params)})")
  trunk = dict(params["trunk"])
  for name, layer in layers.items():
    if name not in trunk:
      raise PretrainedError(f"{source}: the trunk has no layer {name!r}")
    old = trunk[name]["conv"]
    new = {}
    for key in ("kernel", "bias"):
      if tuple(old[key].shape) != tuple(np.shape(layer["conv"][key])):
        raise PretrainedError(
            f"{source}: {name}/{key} has shape {tuple(np.shape(layer['conv'][key]))} but "
            f"the model's is {tuple(old[key].shape)}{hint}")
      new[key] = jnp.asarray(layer["conv"][key], old[key].dtype)
    trunk[name] = {**trunk[name], "conv": new}
  return {**params, "trunk": trunk}


def load_vgg19_trunk(path: str, params: Params,
                     fold_imagenet_normalization: bool = True) -> Params:
  """params with trunk conv1_1..conv4_2 from a torchvision VGG-19 state_dict file.

  conv4_3..conv4_7 (CPM's layers) and everything outside the trunk stay as they are.

  Args:
    path: torch.save'd VGG-19 state_dict (torchvision key names).
    params: the model's parameters (a dict with 'trunk'), e.g. from model.init.
    fold_imagenet_normalization: see vgg19_trunk_layers.

  Raises:
    PretrainedError: the file is missing or not VGG-19, or the trunk's widths differ
      (config.model.width must be 1.0).
  """
  layers = vgg19_trunk_layers(read_state_dict(path), path, fold_imagenet_normalization)
  kernel = params.get("trunk", {}).get("conv1_1", {}).get("conv", {}).get("kernel")
  if kernel is not None and tuple(kernel.shape) != layers["conv1_1"]["conv"]["kernel"].shape:
    raise PretrainedError(
        f"{path}: VGG-19 weights need the paper's channel widths, config.model.width "
        f"= 1.0; this model's conv1_1 kernel is {tuple(kernel.shape)}, VGG-19's "
        f"{layers['conv1_1']['conv']['kernel'].shape}")
  return _replace_trunk_layers(params, layers, path, " (config.model.width must be 1.0)")


def merge_trunk(params: Params, source_params: Params, source: str = "source") -> Params:
  """params with its whole trunk taken from another model's parameters.

  Args:
    params: this model's parameters (a dict with 'trunk').
    source_params: the other model's parameters, with a 'trunk' of the same layers and
      shapes (e.g. a 2D pretraining run of the same width).
    source: names the origin in errors.

  Raises:
    PretrainedError: the source has no trunk, or its layers or shapes differ.
  """
  if "trunk" not in source_params:
    raise PretrainedError(f"{source}: no 'trunk' in its parameters (top-level keys "
                          f"{sorted(source_params)})")
  theirs, ours = source_params["trunk"], params.get("trunk", {})
  if set(theirs) != set(ours):
    raise PretrainedError(f"{source}: trunk layers {sorted(theirs)} differ from the "
                          f"model's {sorted(ours)}")
  return _replace_trunk_layers(params, theirs, source,
                               " (same config.model.width in both runs?)")


def load_checkpoint_trunk(workdir: str, params: Params, step: Optional[int] = None) -> Params:
  """params with the trunk of a training run's checkpoint (latest step by default).

  Reads the checkpoint's parameters without rebuilding that run's model or optimiser, so
  any run whose saved state has params['trunk'] works (RPSM or a 2D pretraining model).
  """
  try:
    _, directory = checkpoints.find(workdir, step)
    saved = workdir_lib.restore_params(directory)
  except (FileNotFoundError, workdir_lib.RunFileError) as e:
    raise PretrainedError(str(e)) from e
  return merge_trunk(params, saved, directory)


def initialize_trunk(spec: str, params: Params) -> Params:
  """Applies config.model.trunk_init: '' (keep), 'vgg19:<file>' or 'checkpoint:<workdir>'."""
  if not spec:
    return params
  kind, _, where = spec.partition(":")
  where = os.path.expanduser(where)
  if kind == "vgg19" and where:
    return load_vgg19_trunk(where, params)
  if kind == "checkpoint" and where:
    return load_checkpoint_trunk(where, params)
  raise PretrainedError(f"config.model.trunk_init={spec!r}: expected '', "
                        "'vgg19:<state_dict file>' or 'checkpoint:<workdir>'")


def freeze_trunk(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """tx for every parameter outside params['trunk']; the trunk gets zero updates.

  The authors froze the pretrained trunk. Zero updates (not only zero gradients) keep
  coupled weight decay from moving it too; the trunk holds no optimiser state.
  """
  def labels(params):
    return {k: jax.tree_util.tree_map(lambda _, k=k: "frozen" if k == "trunk" else "train",
                                      v)
            for k, v in params.items()}

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
