"""Parity of the PyTorch port with the Flax RPSM: outputs, loss, gradients, one Adam step;
the port's model input and pose loss against rpsm_jax's."""

import pytest

torch = pytest.importorskip("torch")


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import default  # noqa: E402
from rpsm_jax import model_factory
from rpsm_jax import poses  # noqa: E402
from rpsm_jax.tools import torch_port  # noqa: E402
from rpsm_jax.training import train  # noqa: E402

TOL = 1e-4
BATCH, FRAMES = 2, 3


def small_config(**model):
  """A tiny model whose sizes hit every padding case.

  Input 52 -> trunk 26 -> 13 -> 6 (a floor-mode pool on an odd size); the adaption then
  runs stride-2 5x5 convolutions on even sizes (6 and, for `paper`, 2) and ceil-mode pools
  on odd ones (3).
  """
  config = default.get_config().model
  config.update(input_size=52, width=1 / 16, adaption_units=32, lstm_units=24)
  config.update(model)
  return config


def _inputs(config, seed=0):
  rng = np.random.default_rng(seed)
  size = config.input_size
  frames = rng.uniform(-0.5, 0.5, (BATCH, FRAMES, size, size, 3)).astype(np.float32)
  target = rng.uniform(0, 1, (BATCH, FRAMES, config.num_joints, 3)).astype(np.float32)
  return frames, target


def _max_abs_diff(a, b):
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _assert_same_tree(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.shape(x) == np.shape(y)


def _random_params(model, frames, seed=0):
  """He-scaled random weights in the model's tree (no init compile), non-zero biases."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), frames[:, :1])

  def draw(s):
    scale = 0.1 if len(s.shape) == 1 else np.sqrt(2 / np.prod(s.shape[:-1]))
    return rng.normal(0, scale, s.shape).astype(np.float32)

  return jax.tree.map(draw, shapes["params"])


@torch.no_grad()
def _randomise(net, seed=0):
  """Draws He-scaled weights and non-zero biases into `net`.

  The Xavier/zero-bias init leaves the tiny model's poses at ~1e-11 (the signal fades
  through 20+ ReLU layers), which would make a forward comparison vacuous.
  """
  gen = torch.Generator().manual_seed(seed)
  for p in net.parameters():
    if p.requires_grad:
      std = 0.1 if p.ndim == 1 else (2 / p[0].numel()) ** 0.5
      p.copy_(torch.randn(p.shape, generator=gen) * std)
  return net


def sse(poses, target):
  """Sum over stages and frames of the squared L2 pose error."""
  return ((poses - target) ** 2).sum()


@pytest.mark.parametrize("model_kwargs", [
    dict(num_stages=1, adaption="paper", temporal="lstm"),
    dict(num_stages=3, adaption="paper", temporal="lstm"),
    dict(num_stages=3, adaption="official", temporal="lstm", num_joints=14),
    dict(num_stages=3, adaption="paper", temporal="dense"),
    dict(num_stages=3, adaption="official", temporal="lstm", share_2d=True),
    dict(num_stages=3, adaption="paper", temporal="lstm", residual_stages=True),
], ids=["k1-paper-lstm", "k3-paper-lstm", "k3-official-lstm-p14", "k3-paper-dense",
        "k3-official-lstm-shared2d", "k3-paper-lstm-residual"])
def test_forward_loss_and_adam_step_match(model_kwargs):
  config = small_config(**model_kwargs)
  frames, target = _inputs(config)
  net = _randomise(torch_port.TorchRPSM.from_config(config))
  params = jax.tree.map(jnp.asarray, torch_port.torch_to_flax(net))
  model = model_factory.create_model(config)
  _assert_same_tree(params, jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x), frames[:, :1])["params"])

  # Forward and loss.
  def loss_fn(p):
    poses = model.apply({"params": p}, frames)
    return sse(poses, target), poses

  (loss, poses), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  torch_poses = net(torch.from_numpy(frames))
  assert torch_poses.shape == (config.num_stages, BATCH, FRAMES, config.num_joints, 3)
  assert float(jnp.abs(poses).std()) > 0.02   # a comparison of non-trivial numbers
  np.testing.assert_allclose(torch_poses.detach().numpy(), poses, rtol=0, atol=TOL)
  torch_loss = sse(torch_poses, torch.from_numpy(target))
  np.testing.assert_allclose(float(torch_loss.detach()), float(loss), rtol=1e-5)

  # Gradients, relative to each leaf's scale (the loss sums hundreds of terms).
  torch_loss.backward()
  torch_grads = torch_port.torch_to_flax(net, grads=True)
  for g, tg in zip(jax.tree.leaves(grads), jax.tree.leaves(torch_grads)):
    np.testing.assert_allclose(tg, g, rtol=0, atol=1e-4 * (float(jnp.abs(g).max()) + 1e-6))

  # One Adam step on each.
  tx = optax.adam(1e-3, eps=1e-8)

  @jax.jit
  def adam_step(params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)

  new_params = adam_step(params, grads)
  opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3,
                         eps=1e-8)
  opt.step()
  stepped = torch_port.torch_to_flax(net)
  assert _max_abs_diff(new_params, params) > 5e-4   # the step did move the weights
  assert _max_abs_diff(stepped, new_params) < TOL


def test_flax_to_torch_round_trip_and_channels_last():
  config = small_config(num_stages=2, adaption="official")
  frames, _ = _inputs(config, seed=1)
  model = model_factory.create_model(config)
  params = _random_params(model, frames)
  net = torch_port.TorchRPSM.from_config(config, channels_last=True)
  torch_port.flax_to_torch(params, net)
  assert _max_abs_diff(torch_port.torch_to_flax(net), params) == 0.0
  assert float(net.stages[0].recurrent.lstm.bias_hh_l0.abs().max()) == 0.0
  with torch.no_grad():
    out = net(torch.from_numpy(frames))
  assert float(out.abs().std()) > 0.02
  np.testing.assert_allclose(out.numpy(), jax.jit(model.apply)({"params": params}, frames),
                             rtol=0, atol=TOL)
  # A tree of another config is refused with the offending name.
  other = model_factory.create_model(small_config(num_stages=2, adaption="paper"))
  bad = _random_params(other, frames)
  with pytest.raises(ValueError, match=r"stage1_adaption/conv2/conv/kernel: shape \(5, 5"):
    torch_port.flax_to_torch(bad, net)


def test_streaming_states_match_whole_clip():
  config = small_config(num_stages=2)
  frames, _ = _inputs(config)
  net = _randomise(torch_port.TorchRPSM.from_config(config), seed=1)
  x = torch.from_numpy(frames)
  with torch.no_grad():
    whole = net(x)
    first, states = net(x[:, :2], return_states=True)
    second = net(x[:, 2:], states=states)
  torch.testing.assert_close(torch.cat([first, second], dim=2), whole, rtol=0, atol=1e-5)


def test_bad_variant_names():
  with pytest.raises(ValueError, match="model.adaption"):
    torch_port.TorchRPSM.from_config(small_config(adaption="papr"))
  with pytest.raises(ValueError, match="model.temporal"):
    torch_port.TorchRPSM.from_config(small_config(temporal="gru"))


def test_remat_and_bfloat16():
  config = small_config(num_stages=2)
  frames, target = _inputs(config)
  x, y = torch.from_numpy(frames), torch.from_numpy(target)
  results = []
  for kwargs in (dict(), dict(remat_trunk=True), dict(dtype="bfloat16")):
    net = _randomise(torch_port.TorchRPSM.from_config(small_config(num_stages=2, **kwargs)))
    out = net(x)
    sse(out, y).backward()
    results.append((out.detach(), net.trunk.conv1_1.conv.weight.grad))
  (ref, ref_grad), (remat, remat_grad), (bf16, _) = results
  torch.testing.assert_close(remat, ref, rtol=0, atol=1e-6)
  torch.testing.assert_close(remat_grad, ref_grad, rtol=1e-5, atol=1e-7)
  assert bf16.dtype == torch.float32
  torch.testing.assert_close(bf16, ref, rtol=0, atol=0.05 * float(ref.abs().max()) + 1e-2)


def test_model_input_matches_poses():
  image = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4, 3), dtype=np.uint8)
  np.testing.assert_allclose(torch_port.model_input(torch.from_numpy(image)).numpy(),
                             poses.model_input(image), rtol=0, atol=1e-7)


def test_pose_loss_matches_train_pose_loss():
  rng = np.random.default_rng(2)
  k, b, t, p = 3, 2, 4, 17
  predicted = rng.normal(size=(k, b, t, p, 3)).astype(np.float32)
  targets = rng.normal(size=(b, t, p, 3)).astype(np.float32)
  mask = (rng.uniform(size=(b, t)) > 0.3).astype(np.float32)   # padded frames count 0
  weights = np.array([0.5, 1.0, 2.0], np.float32)
  loss, per_stage = train.pose_loss(predicted, targets, mask, weights)
  torch_loss, torch_per_stage = torch_port.pose_loss(
      *(torch.from_numpy(a) for a in (predicted, targets, mask, weights)))
  np.testing.assert_allclose(torch_per_stage.numpy(), per_stage, rtol=1e-6)
  np.testing.assert_allclose(float(torch_loss), float(loss), rtol=1e-6)


def test_fresh_models_share_the_lstm_forget_bias():
  config = small_config(lstm_forget_bias=1.0, num_stages=2)
  params = torch_port.torch_to_flax(torch_port.TorchRPSM.from_config(config))
  for k in (1, 2):
    lstm = params[f"stage{k}_recurrent"]["lstm"]
    np.testing.assert_array_equal(lstm["hf"]["bias"], 1.0)
    for gate in ("hi", "hg", "ho"):
      np.testing.assert_array_equal(lstm[gate]["bias"], 0.0)


def test_fresh_residual_models_start_later_read_outs_at_zero():
  config = small_config(residual_stages=True, num_stages=3)
  params = torch_port.torch_to_flax(torch_port.TorchRPSM.from_config(config))
  assert np.abs(params["stage1_recurrent"]["pose"]["kernel"]).max() > 0
  for k in (2, 3):
    np.testing.assert_array_equal(params[f"stage{k}_recurrent"]["pose"]["kernel"], 0.0)
