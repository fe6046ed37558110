"""Shape, parameter-count, causality and cost tests of the RPSM model; its LSTM cell."""


import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default, h36m, h36m_official
from rpsm_jax import model_factory
from rpsm_jax import models
from rpsm_jax.models.recurrent import LSTM, LSTMCell
from rpsm_jax.tools import summary


def small_config(**model):
  config = default.get_config()
  config.model.input_size = 64
  config.model.width = 1 / 16
  config.model.adaption_units = 32
  config.model.lstm_units = 24
  config.model.update(model)
  return config


def init(config, batch=2, frames=3, seed=0):
  model = model_factory.create_model(config.model)
  size = config.model.input_size
  x = jax.random.uniform(jax.random.key(seed), (batch, frames, size, size, 3)) - 0.5
  params = model.init(jax.random.key(1), x)["params"]
  return model, params, x


@pytest.mark.parametrize("stages,frames,joints,size,adaption", [
    (1, 1, 17, 64, "paper"), (2, 5, 14, 96, "official"), (3, 4, 17, 72, "paper"),
    (4, 2, 17, 64, "official")])
def test_output_shape(stages, frames, joints, size, adaption):
  config = small_config(num_stages=stages, num_joints=joints, input_size=size,
                        adaption=adaption)
  model, params, x = init(config, batch=2, frames=frames)
  out = model.apply({"params": params}, x)
  assert out.shape == (stages, 2, frames, joints, 3)
  assert out.dtype == jnp.float32
  assert np.all(np.isfinite(out))


def _conv(cin, cout, k=3):
  return k * k * cin * cout + cout


def _dense(din, dout, bias=True):
  return din * dout + (dout if bias else 0)


def _lstm(din, units):
  # Four gates; input kernels without bias, recurrent kernels with one bias (no peepholes).
  return 4 * (_dense(din, units, bias=False) + _dense(units, units))


# The paper's Table 1, written out independently of the model code.
TRUNK = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
         (256, 256), (256, 512), (512, 512), (512, 256), (256, 256), (256, 256),
         (256, 256), (256, 128)]


def paper_param_count(adaption, stages=3, joints=17):
  total = sum(_conv(cin, cout) for cin, cout in TRUNK)
  for k in range(1, stages + 1):
    total += _conv(128 if k == 1 else 256, 128) + _conv(128, 128)
    if adaption == "paper":   # 46 -> 23 -> 12 -> 6 -> 3
      total += 2 * _conv(128, 128, 5) + _dense(128 * 3 * 3, 1024)
    else:                     # 46 -> 23 -> 23 -> 12
      total += _conv(128, 128, 5) + _conv(128, 128) + _dense(128 * 12 * 12, 1024)
    total += _lstm(1024 if k == 1 else 1024 + 3 * joints, 1024) + _dense(1024, 3 * joints)
  return total


@pytest.mark.parametrize("get_config,adaption", [(h36m.get_config, "paper"),
                                                 (h36m_official.get_config, "official")])
def test_paper_param_count(get_config, adaption):
  config = get_config()
  model = model_factory.create_model(config.model)
  variables, _ = summary.abstract_variables(model, config)
  counts = summary.count_params(variables["params"])
  assert len(TRUNK) == 15
  assert counts["total"] == paper_param_count(adaption)
  assert counts["by_module"]["Pose2DTrunk"] == sum(_conv(i, o) for i, o in TRUNK)


def test_paper_feature_resolution():
  config = h36m.get_config()
  trunk = models.Pose2DTrunk()
  x = jax.ShapeDtypeStruct((1, 368, 368, 3), jnp.float32)
  out = jax.eval_shape(lambda x: trunk.init_with_output(jax.random.key(0), x)[0], x)
  assert out.shape == (1, 46, 46, 128)
  assert config.model.input_size == 368


@pytest.mark.parametrize("temporal", ["lstm", "dense"])
def test_causal(temporal):
  config = small_config(temporal=temporal)
  model, params, x = init(config, frames=5)
  out = model.apply({"params": params}, x)
  t = 2
  changed = x.at[:, t + 1:].set(jax.random.uniform(jax.random.key(7), x[:, t + 1:].shape))
  out2 = model.apply({"params": params}, changed)
  np.testing.assert_allclose(out[:, :, :t + 1], out2[:, :, :t + 1], atol=1e-6)
  assert not np.allclose(out[:, :, t + 1:], out2[:, :, t + 1:], atol=1e-6)


def test_lstm_carries_across_frames_but_dense_does_not():
  x_changed_first = None
  for temporal in ("lstm", "dense"):
    config = small_config(temporal=temporal)
    model, params, x = init(config, frames=4)
    x_changed_first = x.at[:, 0].set(0.3)
    out = model.apply({"params": params}, x)
    out2 = model.apply({"params": params}, x_changed_first)
    later_frames_equal = np.allclose(out[:, :, 1:], out2[:, :, 1:], atol=1e-6)
    assert later_frames_equal == (temporal == "dense")


def test_dense_frames_independent_of_clip_length():
  config = small_config(temporal="dense")
  model, params, x = init(config, frames=4)
  whole = model.apply({"params": params}, x)
  for t in range(4):
    single = model.apply({"params": params}, x[:, t:t + 1])
    np.testing.assert_allclose(single[:, :, 0], whole[:, :, t], atol=1e-5)


def _leaves_by_group(params):
  return {k: jax.tree.leaves(v) for k, v in params.items()}


def test_stages_hold_distinct_parameters():
  config = small_config(num_stages=3)
  _, params, _ = init(config)
  groups = set(params)
  for kind in ("pose2d", "adaption", "recurrent"):
    assert {f"stage{k}_{kind}" for k in (1, 2, 3)} <= groups
  # Same-shaped modules of stages 2 and 3 are initialised differently: distinct weights.
  for kind in ("pose2d", "adaption", "recurrent"):
    a = jax.tree.leaves(params[f"stage2_{kind}"])
    b = jax.tree.leaves(params[f"stage3_{kind}"])
    assert any(x.shape == y.shape and not np.allclose(x, y) for x, y in zip(a, b))
  assert "shared_pose2d" not in groups


def test_full_sharing_has_one_set_of_2d_layers():
  config = small_config(num_stages=3, share_2d=True)
  _, params, _ = init(config)
  assert "shared_pose2d" in params
  assert not any(k.endswith("_pose2d") and k.startswith("stage") for k in params)
  assert {f"stage{k}_adaption" for k in (1, 2, 3)} <= set(params)
  flat = flax.traverse_util.flatten_dict(params)
  n_shared = sum(v.size for k, v in flat.items() if k[0] == "shared_pose2d")
  n_unshared = sum(v.size for k, v in flax.traverse_util.flatten_dict(
      init(small_config(num_stages=3))[1]).items() if k[0].endswith("_pose2d"))
  assert n_shared < n_unshared / 2


def test_trunk_runs_once():
  config1, config3 = h36m.get_config(), h36m.get_config()
  config1.model.num_stages = 1
  flops1 = summary.forward_flops_per_frame(model_factory.create_model(config1.model), config1)
  flops3 = summary.forward_flops_per_frame(model_factory.create_model(config3.model), config3)
  assert flops1 > 80e9          # the paper model is ~90-100 GFLOP per frame
  assert flops3 < 1.15 * flops1


def test_remat_and_bfloat16():
  config = small_config()
  model, params, x = init(config)
  ref = model.apply({"params": params}, x)
  remat = model_factory.create_model(small_config(remat_trunk=True).model)
  np.testing.assert_allclose(remat.apply({"params": params}, x), ref, atol=1e-6)
  bf16 = model_factory.create_model(small_config(dtype="bfloat16").model)
  out = bf16.apply({"params": params}, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.05 * float(jnp.abs(ref).max()) + 1e-2)


def test_streaming_carries_match_whole_clip():
  config = small_config()
  model, params, x = init(config, frames=6)
  whole = model.apply({"params": params}, x)
  first, carries = model.apply({"params": params}, x[:, :4], return_carries=True)
  second = model.apply({"params": params}, x[:, 4:], carries=carries)
  np.testing.assert_allclose(jnp.concatenate([first, second], axis=2), whole, atol=1e-5)


def test_jitted_gradient_step_on_cpu():
  config = small_config()
  model, params, x = init(config)
  target = jnp.full((2, 3, 17, 3), 0.5)

  @jax.jit
  def step(params):
    def loss_fn(p):
      return jnp.sum((model.apply({"params": p}, x) - target) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), loss, grads

  new_params, loss, grads = step(params)
  new_loss = step(new_params)[1]
  assert np.isfinite(loss) and new_loss < loss
  # Every parameter receives gradient (nothing is disconnected).
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_bad_variant_names():
  with pytest.raises(ValueError, match="model.adaption"):
    init(small_config(adaption="papr"))
  with pytest.raises(ValueError, match="model.temporal"):
    init(small_config(temporal="gru"))
  with pytest.raises(ValueError, match="model.dtype"):
    model_factory.create_model(small_config(dtype="float16").model)


def test_cell_is_flax_optimized_lstm_cell_at_forget_bias_zero():
  x = jax.random.normal(jax.random.key(1), (3, 7))
  carry = (jnp.zeros((3, 5)), jnp.zeros((3, 5)))
  flax_cell, cell = nn.OptimizedLSTMCell(5), LSTMCell(5)
  params = flax_cell.init(jax.random.key(0), carry, x)
  mine = cell.init(jax.random.key(0), carry, x)
  assert jax.tree.structure(mine) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)  # Same names, initialisers and draws.
  params = jax.tree.map(lambda p: p + 0.1, params)  # Non-zero biases too.
  theirs = ours = carry
  for t in range(3):
    theirs, h_theirs = flax_cell.apply(params, theirs, x * (t + 1))
    ours, h_ours = cell.apply(params, ours, x * (t + 1))
    np.testing.assert_array_equal(h_ours, h_theirs)
    np.testing.assert_array_equal(ours[0], theirs[0])


def test_clip_lstm_is_the_cell_stepped_over_frames():
  # LSTM projects every frame's input ahead of its scan; same parameters, same function.
  x = jax.random.normal(jax.random.key(1), (3, 6, 7))
  carry = (jax.random.normal(jax.random.key(2), (3, 5)),
           jax.random.normal(jax.random.key(3), (3, 5)))
  lstm, cell = LSTM(5, forget_bias=1.0), LSTMCell(5, forget_bias=1.0)
  params = lstm.init(jax.random.key(0), carry, x)
  cell_params = cell.init(jax.random.key(0), carry, x[:, 0])
  assert jax.tree.structure(params) == jax.tree.structure(cell_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(cell_params)):
    np.testing.assert_array_equal(a, b)
  params = jax.tree.map(lambda p: p + 0.1, params)
  (c, h), hs = lstm.apply(params, carry, x)
  state = carry
  for t in range(x.shape[1]):
    state, h_t = cell.apply(params, state, x[:, t])
    np.testing.assert_allclose(hs[:, t], h_t, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c, state[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h, state[1], rtol=1e-5, atol=1e-6)


def test_forget_bias_starts_every_stage_forget_gate():
  config = small_config(lstm_forget_bias=1.0)
  config.model.num_stages = 2
  model = model_factory.create_model(config.model)
  size = config.model.input_size
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, size, size, 3)))["params"]
  for k in (1, 2):
    lstm = params[f"stage{k}_recurrent"]["lstm"]
    np.testing.assert_array_equal(lstm["hf"]["bias"], 1.0)
    for gate in ("hi", "hg", "ho"):
      np.testing.assert_array_equal(lstm[gate]["bias"], 0.0)


def test_residual_stages_start_as_the_identity_of_stage_one():
  config = small_config(num_stages=3, residual_stages=True)
  model, params, x = init(config)
  for k in (2, 3):
    np.testing.assert_array_equal(params[f"stage{k}_recurrent"]["pose"]["kernel"], 0.0)
  poses = model.apply({"params": params}, x)
  assert float(jnp.abs(poses[0]).max()) > 0
  np.testing.assert_array_equal(poses[1], poses[0])
  np.testing.assert_array_equal(poses[2], poses[0])
  # Later stages still learn: the zero read-out gets a gradient, so stage 3 can move.
  grads = jax.grad(lambda p: (model.apply({"params": p}, x)[2] ** 2).sum())(params)
  assert float(jnp.abs(grads["stage3_recurrent"]["pose"]["kernel"]).max()) > 0


def test_precomputed_trunk_features_give_the_same_poses():
  model, params, x = init(small_config())
  b, t = x.shape[:2]
  shared = models.trunk_of(model).apply({"params": params["trunk"]},
                                        x.reshape((b * t,) + x.shape[2:]))
  out = model.apply({"params": params}, None,
                    trunk_features=shared.reshape((b, t) + shared.shape[1:]))
  np.testing.assert_allclose(out, model.apply({"params": params}, x), rtol=1e-5, atol=1e-6)
