"""Tests of trunk initialisation from a VGG-19 state_dict and from another run's trunk.

torchvision is not importable here, so the test writes a state_dict with torchvision's
VGG-19 key names and shapes itself: random first ten convolutions, and the later
convolutions and the classifier as zero-stride views of the exact shapes (a few bytes on
disk instead of half a gigabyte).
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

try:  # The VGG-19 file tests need torch; the checkpoint and freeze tests do not.
  import torch
  import torch.nn.functional as F
except ImportError:  # No CPU torch wheel beyond Python 3.11 here: those tests skip.
  torch = F = None

from rpsm_jax.training import checkpoints
from rpsm_jax.training import optim
from rpsm_jax.training import pretrained
from rpsm_jax.training import train
from rpsm_jax.models.trunk import Pose2DTrunk

# torchvision's vgg19 "features" configuration: channels, 'M' = max-pool.
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M")
_SIZE = 32


def _vgg19_state_dict(seed=0):
  generator = torch.Generator().manual_seed(seed)
  state, index, cin, convs = {}, 0, 3, 0
  for v in _VGG19:
    if v == "M":
      index += 1
      continue
    if convs < 10:  # The ten the trunk uses: random, He-scaled.
      weight = torch.randn(v, cin, 3, 3, generator=generator) * math.sqrt(2 / (9 * cin))
      bias = torch.randn(v, generator=generator) * 0.1
    else:
      weight, bias = torch.zeros(()).expand(v, cin, 3, 3), torch.zeros(()).expand(v)
    state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight, bias
    index, cin, convs = index + 2, v, convs + 1
  for index, (cout, cin) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
    state[f"classifier.{index}.weight"] = torch.zeros(()).expand(cout, cin)
    state[f"classifier.{index}.bias"] = torch.zeros(()).expand(cout)
  return state


def _torch_first_ten(state, x_nhwc):
  """VGG-19 features up to conv4_2 + ReLU, in torch; (N, H, W, 3) -> (N, H/8, W/8, 512)."""
  x = torch.from_numpy(np.asarray(x_nhwc)).permute(0, 3, 1, 2)
  for index in (0, 2, "M", 5, 7, "M", 10, 12, 14, 16, "M", 19, 21):
    if index == "M":
      x = F.max_pool2d(x, 2)
    else:
      x = F.relu(F.conv2d(x, state[f"features.{index}.weight"],
                          state[f"features.{index}.bias"], padding=1))
  return x.permute(0, 2, 3, 1).numpy()


def _trunk_params(width=1.0, seed=0):
  """Random trunk parameters of the model's shapes (numpy: Flax's own init of the 11 M
  parameters takes seconds on a CPU)."""
  shapes = jax.eval_shape(Pose2DTrunk(width).init, jax.random.key(0),
                          jnp.zeros((1, _SIZE, _SIZE, 3)))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.05 * rng.standard_normal(s.shape, np.float32)), shapes)


def _intermediate(trunk_params, x, layer):
  _, state = Pose2DTrunk(1.0).apply(
      {"params": trunk_params}, x, capture_intermediates=lambda m, _: m.name == layer,
      mutable=["intermediates"])
  return np.asarray(state["intermediates"][layer]["__call__"][0])


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
  pytest.importorskip("torch")
  state = _vgg19_state_dict()
  path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
  torch.save(state, path)
  return path, state


def test_trunk_matches_torch_vgg19_up_to_conv4_2(vgg_file):
  path, state = vgg_file
  head = {"conv": {"kernel": jnp.ones((3, 3, 128, 128))}}
  params = {"trunk": _trunk_params(), "stage1_pose2d": head}
  loaded = pretrained.load_vgg19_trunk(str(path), params, fold_imagenet_normalization=False)
  x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, _SIZE, _SIZE, 3)).astype(np.float32)
  ours = _intermediate(loaded["trunk"], x, "conv4_2")
  theirs = _torch_first_ten(state, x)
  assert ours.shape == theirs.shape == (2, _SIZE // 8, _SIZE // 8, 512)
  assert np.abs(theirs).mean() > 0.1  # A real signal, not all zeros after the ReLUs.
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
  # CPM's own layers and everything outside the trunk are untouched.
  for name in ("conv4_3", "conv4_4", "conv4_5", "conv4_6", "conv4_7"):
    for key in ("kernel", "bias"):
      assert loaded["trunk"][name]["conv"][key] is params["trunk"][name]["conv"][key]
  assert loaded["stage1_pose2d"] is head
  assert not np.array_equal(loaded["trunk"]["conv1_1"]["conv"]["kernel"],
                            params["trunk"]["conv1_1"]["conv"]["kernel"])


def test_folded_imagenet_normalisation(vgg_file):
  """conv1_1 on the model's input (x - 0.5) = VGG's conv1_1 on (x - mean) / std."""
  path, state = vgg_file
  loaded = pretrained.load_vgg19_trunk(str(path), {"trunk": _trunk_params()})
  x = np.random.default_rng(1).uniform(0, 1, (1, _SIZE, _SIZE, 3)).astype(np.float32)
  ours = _intermediate(loaded["trunk"], x - 0.5, "conv1_1")
  normalised = ((x - np.array(pretrained.IMAGENET_MEAN))
                / np.array(pretrained.IMAGENET_STD)).astype(np.float32)
  theirs = F.relu(F.conv2d(torch.from_numpy(normalised).permute(0, 3, 1, 2),
                           state["features.0.weight"], state["features.0.bias"],
                           padding=1)).permute(0, 2, 3, 1).numpy()
  # Equal away from the border, where the zero padding means different colours.
  np.testing.assert_allclose(ours[:, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1], atol=1e-4)


def test_bad_files_and_widths_are_named(vgg_file, tmp_path):
  path, state = vgg_file
  with pytest.raises(pretrained.PretrainedError, match="config.model.width = 1.0"):
    pretrained.load_vgg19_trunk(str(path), {"trunk": _trunk_params(width=0.5)})
  missing = dict(state)
  del missing["features.21.weight"], missing["features.16.bias"]
  torch.save(missing, tmp_path / "missing.pth")
  with pytest.raises(pretrained.PretrainedError,
                     match=r"missing.pth: not a torchvision VGG-19 .*features.16.bias.*"
                     r"features.21.weight"):
    pretrained.load_vgg19_trunk(str(tmp_path / "missing.pth"), {"trunk": _trunk_params()})
  wrong = dict(state, **{"features.5.weight": torch.zeros(128, 64, 5, 5)})
  torch.save({"state_dict": wrong}, tmp_path / "wrong.pth")
  with pytest.raises(pretrained.PretrainedError,
                     match=r"wrong.pth: features.5 \(for conv2_1\) has weight "
                     r"\(128, 64, 5, 5\)"):
    pretrained.load_vgg19_trunk(str(tmp_path / "wrong.pth"), {"trunk": _trunk_params()})
  (tmp_path / "junk.pth").write_bytes(b"not a torch file")
  with pytest.raises(pretrained.PretrainedError, match="junk.pth: unreadable torch file"):
    pretrained.read_state_dict(str(tmp_path / "junk.pth"))
  with pytest.raises(pretrained.PretrainedError, match="missing weights file"):
    pretrained.initialize_trunk(f"vgg19:{tmp_path / 'none.pth'}", {"trunk": {}})
  with pytest.raises(pretrained.PretrainedError, match="trunk_init='imagenet'"):
    pretrained.initialize_trunk("imagenet", {"trunk": {}})


def test_merge_trunk_and_checkpoint(tmp_path):
  ours = {"trunk": _trunk_params(seed=0), "stage1_recurrent": {"b": jnp.zeros(3)}}
  theirs = {"trunk": _trunk_params(seed=1), "heatmap_head": {"b": jnp.ones(16)}}
  merged = pretrained.merge_trunk(ours, theirs)
  equal = jax.tree_util.tree_map(np.array_equal, merged["trunk"], theirs["trunk"])
  assert all(jax.tree_util.tree_leaves(equal))
  assert merged["stage1_recurrent"] is ours["stage1_recurrent"]
  with pytest.raises(pretrained.PretrainedError, match="conv1_1/kernel has shape"):
    pretrained.merge_trunk(ours, {"trunk": _trunk_params(width=0.5)})
  with pytest.raises(pretrained.PretrainedError, match="run2: no 'trunk'"):
    pretrained.merge_trunk(ours, {"heatmap_head": {}}, "run2")
  # A run's checkpoint of a whole train state, read without rebuilding its model.
  state = train.TrainState.create(apply_fn=None, params=theirs, tx=optax.adam(1e-3))
  manager = checkpoints.Checkpoints(str(tmp_path / "run"), keep=1)
  manager.save(7, state)
  manager.close()
  restored = pretrained.initialize_trunk(f"checkpoint:{tmp_path / 'run'}", ours)
  equal = jax.tree_util.tree_map(np.array_equal, restored["trunk"], theirs["trunk"])
  assert all(jax.tree_util.tree_leaves(equal))
  with pytest.raises(pretrained.PretrainedError, match="holds no checkpoint"):
    pretrained.load_checkpoint_trunk(str(tmp_path / "nothing"), ours)


def test_frozen_trunk_gets_zero_updates():
  params = {"trunk": {"conv1_1": {"conv": {"kernel": jnp.ones((3, 3, 3, 8))}}},
            "stage1_pose2d": {"conv": {"kernel": jnp.ones((3, 3, 8, 8))}}}
  tx = pretrained.freeze_trunk(optax.chain(optax.add_decayed_weights(1e-4),
                                           optax.adam(1e-2)))
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert not jnp.any(updates["trunk"]["conv1_1"]["conv"]["kernel"])
  assert jnp.all(updates["stage1_pose2d"]["conv"]["kernel"] < 0)


def test_trunk_learning_rate_factor_scales_only_the_trunk():
  params = {"trunk": {"conv1_1": {"kernel": jnp.ones((3, 3, 3, 8))}},
            "stage1_pose2d": {"conv": {"kernel": jnp.ones((3, 3, 8, 8))}}}
  grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params)

  def first_updates(factor):
    opt = ml_collections.ConfigDict(dict(
        name="adam_l2", learning_rate=1e-2, weight_decay=1e-4, schedule="constant",
        warmup_steps=0, end_learning_rate_factor=0.0, grad_clip_norm=0.0,
        trunk_learning_rate_factor=factor))
    tx, _ = optim.create_optimizer(opt, 10)
    return tx.update(grads, tx.init(params), params)[0]

  base, slow = first_updates(1.0), first_updates(0.1)
  np.testing.assert_allclose(slow["trunk"]["conv1_1"]["kernel"],
                             0.1 * base["trunk"]["conv1_1"]["kernel"], rtol=1e-6)
  np.testing.assert_array_equal(slow["stage1_pose2d"]["conv"]["kernel"],
                                base["stage1_pose2d"]["conv"]["kernel"])
  assert jnp.all(base["trunk"]["conv1_1"]["kernel"] < 0)
