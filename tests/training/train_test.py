"""Training, checkpointing and resume tests on the tiny config."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rpsm_jax import model_factory
from rpsm_jax.training import checkpoints
from rpsm_jax.training import config_checks
from rpsm_jax.training import optim
from rpsm_jax.training import train


def test_pose_loss_matches_hand_computation():
  poses = jnp.zeros((2, 1, 2, 1, 3)).at[0, 0, 0, 0].set(jnp.array([1.0, 2.0, 2.0]))
  poses = poses.at[1, 0, 1, 0].set(jnp.array([0.0, 3.0, 0.0]))
  targets = jnp.zeros((1, 2, 1, 3))
  loss, per_stage = train.pose_loss(poses, targets, jnp.ones((1, 2)), jnp.array([1.0, 2.0]))
  np.testing.assert_allclose(per_stage, [9.0, 9.0])
  np.testing.assert_allclose(loss, 9.0 + 2 * 9.0)
  masked, _ = train.pose_loss(poses, targets, jnp.array([[1.0, 0.0]]), jnp.ones(2))
  np.testing.assert_allclose(masked, 9.0)


def test_adam_l2_is_coupled_weight_decay(tiny_config):
  opt = tiny_config.optimizer
  opt.schedule, opt.learning_rate, opt.weight_decay = "constant", 0.1, 0.5
  opt.warmup_steps = 0
  tx, _ = optim.create_optimizer(opt, 10)
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([0.5, 0.25])}
  updates, _ = tx.update(grads, tx.init(params), params)
  reference = optax.adam(0.1)
  ref_updates, _ = reference.update({"w": grads["w"] + 0.5 * params["w"]},
                                    reference.init(params))
  np.testing.assert_allclose(updates["w"], ref_updates["w"], rtol=1e-6)
  opt.name = "adamw"
  tx, _ = optim.create_optimizer(opt, 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert not np.allclose(updates["w"], ref_updates["w"])


def test_schedules(tiny_config):
  opt = tiny_config.optimizer
  opt.learning_rate, opt.warmup_steps, opt.schedule = 1.0, 10, "warmup_cosine"
  opt.end_learning_rate_factor = 0.1
  _, schedule = optim.create_optimizer(opt, 100)
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(100)) == pytest.approx(0.1)
  opt.schedule = "constant"
  _, schedule = optim.create_optimizer(opt, 100)
  assert float(schedule(5)) == pytest.approx(0.5) and float(schedule(50)) == 1.0


def test_train_and_evaluate_smoke(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(tiny_config, workdir)
  saved = json.loads(open(os.path.join(workdir, "eval", "results.json")).read())
  k = tiny_config.model.num_stages
  assert set(saved["mpjpe_mm"]) == {f"stage_{i}" for i in range(1, k + 1)}
  for key in ("p_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm"):
    assert set(saved[key]) == set(saved["mpjpe_mm"])
  assert saved["baseline_mean_pose_mpjpe_mm"] > 0
  assert saved["frames"] > 0 and saved["frames"] == results["frames"]
  for action, entry in saved["per_action"].items():
    assert entry["frames"] > 0 and entry["mpjpe_mm"] > 0 and entry["p_mpjpe_mm"] > 0
  assert sum(e["frames"] for e in saved["per_action"].values()) == saved["frames"]
  assert os.path.exists(os.path.join(workdir, "eval", "results.md"))
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  logged = [l for l in lines if "loss" in l]
  assert [l["step"] for l in logged] == [2, 4, 6]
  assert all(k in logged[0] for k in ("loss_stage_1", "learning_rate", "steps_per_s",
                                      "frames_per_s"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]
  # --mode=eval reproduces the final evaluation from the checkpoint.
  again = train.evaluate_checkpoint(tiny_config, workdir)
  assert again["mpjpe_mm"] == pytest.approx(results["mpjpe_mm"], rel=1e-5)


def _restore(config, workdir, step):
  model = model_factory.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
  state = train.create_train_state(config, model, tx, jax.random.key(123))
  manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  state = manager.restore(state, step)
  manager.close()
  return state


def test_resume_continues_exactly(tiny_config, tmp_path):
  tiny_config.eval_every_steps = 100       # no periodic evaluation, only the final one
  # Two separate runs are compared: "auto" may choose other convolutions in each while
  # other work loads the cores (a restarted run keeps its own: autotune.pinned).
  tiny_config.model.conv_algorithm = "direct"
  # The cosine schedule depends on num_train_steps, which this test changes to stop early.
  tiny_config.optimizer.schedule = "constant"
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(tiny_config, straight)
  interrupted = str(tmp_path / "interrupted")
  tiny_config.num_train_steps = 4           # "stopped" after the checkpoint at step 4
  train.train_and_evaluate(tiny_config, interrupted)
  tiny_config.num_train_steps = 6
  train.train_and_evaluate(tiny_config, interrupted)
  first = _restore(tiny_config, interrupted, 4)
  assert int(first.step) == 4
  a, b = _restore(tiny_config, straight, 6), _restore(tiny_config, interrupted, 6)
  assert int(a.step) == int(b.step) == 6
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)),
                  jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Checkpoint at 4 of the straight run equals the interrupted run's: same optimiser state.
  c = _restore(tiny_config, straight, 4)
  for x, y in zip(jax.tree.leaves(c.opt_state), jax.tree.leaves(first.opt_state)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_PMAP_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from rpsm_jax.cpu import xla_cpu
    xla_cpu.configure()
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    import jax.numpy as jnp, numpy as np
    from configs import synthetic_tiny
    from rpsm_jax.pipeline import input_pipeline
    from rpsm_jax import model_factory
    from rpsm_jax.training import optim
    from rpsm_jax.training import train
    from rpsm_jax import parallel
    assert jax.local_device_count() == 2, jax.devices()
    config = synthetic_tiny.get_config()
    model = model_factory.create_model(config.model)
    tx, _ = optim.create_optimizer(config.optimizer, 10)
    mesh = parallel.create_mesh()
    state = train.create_train_state(config, model, tx, jax.random.key(0), mesh)
    rng = np.random.default_rng(0)
    s = config.model.input_size
    batch = train.with_stop_flag({{
        "image": rng.integers(0, 255, (4, 4, s, s, 3)).astype(np.uint8),
        "pose_3d": rng.uniform(size=(4, 4, 17, 3)).astype(np.float32),
        "mask": np.ones((4, 4), bool)}})
    config.parallelism = "global"
    single = train.compile_train_step(config, mesh)
    config.parallelism = "pmap"
    multi = train.compile_train_step(config, mesh)
    s1, s2 = state, parallel.to_pmap(state)
    for _ in range(2):
      s1, m1 = single(s1, parallel.global_batch(batch, mesh))
      s2, m2 = multi(s2, parallel.split_local_devices(batch))
    s2 = parallel.from_pmap(s2, mesh)
    diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel()
                            for a, b in zip(jax.tree.leaves(s1.params),
                                            jax.tree.leaves(s2.params))])
    print("DIFFS", float(np.max(diffs)), float(np.mean(diffs > 1e-5)),
          config.optimizer.learning_rate)
    for k in ("loss", "grad_norm", "update_norm"):
      print("METRIC", k, float(m1[k]), float(np.asarray(m2[k])[0]))
    assert float(m1["stop"]) == 0.0
""")


def test_pmap_step_matches_jit_step(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  out = subprocess.run([sys.executable, "-c", _PMAP_SCRIPT.format(root=root)],
                       capture_output=True, text=True, timeout=600, cwd=root)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  maxdiff, fraction, lr = map(float, [l for l in lines if l.startswith("DIFFS")][0].split()[1:])
  metrics = [l.split()[1:] for l in lines if l.startswith("METRIC")]
  assert len(metrics) == 3, out.stdout
  for name, jit_value, pmap_value in metrics:
    # A missing or per-device gradient mean would change grad_norm by far more than this.
    assert float(jit_value) == pytest.approx(float(pmap_value), rel=1e-4), name
  # Adam's first steps move each weight by about +-lr whatever the gradient's size, so a
  # gradient within rounding of zero (summed in another order by pmap) may flip sign and
  # move a few weights by 2 lr (seen: 13 of 94,201 on jax 0.12). All others agree.
  assert fraction < 1e-3
  assert maxdiff <= 2 * 2 * lr + 1e-6       # 2 steps


@pytest.mark.parametrize("field,value,message", [
    ("clip_length", 0, "clip_length"),
    ("loss_stage_weights", (1.0, 1.0), "loss_stage_weights"),
    ("nonfinite_policy", "ignore", "nonfinite_policy"),
])
def test_bad_config_values_are_refused_before_compiling(tiny_config, field, value, message):
  tiny_config[field] = value
  with pytest.raises(ValueError, match=message):
    config_checks.check(tiny_config)


def test_bad_model_variant_refused(tiny_config):
  tiny_config.model.adaption = "papr"
  with pytest.raises(ValueError, match="config.model.adaption"):
    config_checks.check(tiny_config)
