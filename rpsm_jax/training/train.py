"""Training: `train_and_evaluate(config, workdir)` and `evaluate_checkpoint`.

The train step is written once, for one device (`train_step`). `compile_train_step` decides
how it runs: `jax.jit` on a single device, `jax.pmap` over all local devices (gradients and
metrics averaged with `lax.pmean`) when there are several. Multi-host runs start with
`initialize_distributed()`; each host then feeds its slice of every global batch.
"""

import functools
import json
import os
import signal
import threading
from typing import Optional

from absl import logging
from flax import jax_utils
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rpsm_jax import poses
from rpsm_jax import model_factory
from rpsm_jax import poses
from rpsm_jax import workdir as workdir_lib
from rpsm_jax.training import checkpoints
from rpsm_jax.training import config_checks
from rpsm_jax.evaluation import evaluate
from rpsm_jax.pipeline import input_pipeline
from rpsm_jax.training import metric_writers
from rpsm_jax.training import optim
from rpsm_jax.training import pretrained
from rpsm_jax.training import progress
from rpsm_jax.evaluation import visualize

AXIS = "devices"
_STEP_KEYS = ("image", "pose_3d", "mask")   # what the train step needs from a batch


class TrainState(train_state.TrainState):
  pass


def initialize_distributed() -> None:
  """Joins a multi-host run when the environment describes one (SLURM, TPU pods, or
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set explicitly)."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("RPSM_DISTRIBUTED") == "1":
    jax.distributed.initialize()


def stage_weights(config) -> jnp.ndarray:
  k = config.model.num_stages
  weights = tuple(config.loss_stage_weights) or (1.0,) * k
  if len(weights) != k:
    raise ValueError(f"config.loss_stage_weights has {len(weights)} entries for "
                     f"{k} stages")
  return jnp.asarray(weights, jnp.float32)


def pose_loss(poses, targets, mask, weights):
  """Sum over stages k of alpha_k * sum over frames of the squared L2 pose error.

  poses (K, B, T, P, 3); targets (B, T, P, 3); mask (B, T); weights (K,). Normalised
  coordinates. Returns (mean over clips of the weighted sum, per-stage (K,) terms).
  """
  sq = jnp.sum((poses - targets[None]) ** 2, axis=(-2, -1)) * mask[None]   # (K, B, T)
  per_stage = jnp.sum(sq, axis=-1).mean(axis=-1)                            # (K,)
  return jnp.sum(weights * per_stage), per_stage


def train_step(state: TrainState, batch, *, weights, axis_name: Optional[str] = None):
  """One optimiser step on one device's batch; returns (new_state, metrics).

  A step whose loss or gradients are not finite leaves parameters and optimiser state
  unchanged (only the step counter advances) and reports finite=0, so a NaN never reaches
  a checkpoint; `config.nonfinite_policy` decides on the host whether training stops.
  """
  frames = poses.model_input(batch["image"])
  mask = batch["mask"].astype(jnp.float32)

  def loss_fn(params):
    poses = state.apply_fn({"params": params}, frames)
    return pose_loss(poses, batch["pose_3d"], mask, weights)

  (loss, per_stage), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name is not None:
    grads, loss, per_stage = jax.lax.pmean((grads, loss, per_stage), axis_name)
  grad_norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = state.apply_gradients(grads=grads)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                           state.replace(step=state.step + 1))
  metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite.astype(jnp.float32)}
  metrics.update({f"loss_stage_{k + 1}": per_stage[k] for k in range(per_stage.shape[0])})
  return new_state, metrics


def compile_train_step(config, num_devices: int):
  """jit (one device) or pmap (several) of `train_step`; the state is donated."""
  kwargs = dict(weights=stage_weights(config))
  if num_devices == 1:
    return jax.jit(functools.partial(train_step, **kwargs), donate_argnums=0)
  return jax.pmap(functools.partial(train_step, axis_name=AXIS, **kwargs),
                  axis_name=AXIS, donate_argnums=0)


def create_train_state(config, model, tx, rng) -> TrainState:
  """Randomly initialised state; `config.model.freeze_trunk` gives the trunk no updates."""
  size = config.model.input_size
  frames = poses.dummy_frames(config.clip_length, size)
  params = jax.jit(model.init)(rng, frames)["params"]
  if config.model.freeze_trunk:
    tx = pretrained.freeze_trunk(tx)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


class NonFiniteError(FloatingPointError):
  pass


def _mean_metrics(history: list[dict]) -> dict:
  stacked = jax.device_get(history)
  return {k: float(np.mean([np.mean(h[k]) for h in stacked])) for k in stacked[0]}


def _check_finite(history: list[dict], first_step: int, policy: str) -> int:
  """Counts non-finite steps in `history` (metrics of steps first_step + 1, ...).

  Raises NonFiniteError naming the first one when policy == 'stop'.
  """
  if not history:
    return 0
  flags = [float(np.min(h["finite"])) for h in jax.device_get(history)]
  bad = [first_step + i + 1 for i, f in enumerate(flags) if f < 1.0]
  if bad and policy == "stop":
    raise NonFiniteError(
        f"non-finite loss or gradients at step {bad[0]} (of {len(bad)} in this interval); "
        "the last checkpoint holds the last good parameters. Set "
        "--config.nonfinite_policy=skip to skip such updates instead")
  return len(bad)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains on the train split, evaluates periodically and at the end; returns the final
  evaluation results (also written to <workdir>/eval/results.json).

  SIGTERM or SIGINT (preemption, Ctrl-C) ends the current step, saves a checkpoint there
  and returns {"preempted": True, "step": n}; the next start resumes from it.
  """
  config_checks.check(config, jax.device_count())
  num_devices = jax.local_device_count()
  os.makedirs(workdir, exist_ok=True)
  pipe = input_pipeline.create_pipeline(
      config, workdir, shard=(jax.process_index(), jax.process_count()))
  model = model_factory.create_model(config.model)
  tx, schedule = optim.create_optimizer(config.optimizer, config.num_train_steps)
  state = create_train_state(config, model, tx, jax.random.key(config.seed))
  manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  state = manager.restore_latest(state)
  start = int(state.step)
  if not start and config.model.trunk_init:  # a fresh run starts from pretrained layers
    state = state.replace(params=pretrained.initialize_trunk(config.model.trunk_init,
                                                             state.params))
  writer = metric_writers.MetricWriter(workdir, just_logging=jax.process_index() > 0)
  if start:
    logging.info("Resuming from the checkpoint at step %d", start)
  else:
    writer.write_hparams(config.to_dict())
  if jax.process_index() == 0:
    workdir_lib.save_config(config, workdir)

  step_fn = compile_train_step(config, num_devices)
  if num_devices > 1:
    state = jax_utils.replicate(state)
  total = config.num_train_steps
  report = progress.Progress(total, start, frames_per_step=config.batch_size
                             * config.clip_length)
  # Per-step metrics since the last log (device arrays; fetched once per interval).
  history, history_start, checked, nonfinite = [], start, 0, 0
  last_stage = f"stage_{config.model.num_stages}"

  def check_history():
    """Counts non-finite steps not yet checked (raises under nonfinite_policy=stop)."""
    nonlocal checked
    count = _check_finite(history[checked:], history_start + checked,
                          config.nonfinite_policy)
    checked = len(history)
    return count

  batches = pipe.train.iterate(start_step=start, num_steps=total)
  with _StopOnSignals() as stop:
    try:
      for step in range(start, total):
        batch = next(batches)
        batch = {k: batch[k] for k in _STEP_KEYS}
        if num_devices > 1:
          batch = input_pipeline.add_device_axis(batch, num_devices)
        state, metrics = step_fn(state, batch)
        if history:  # keep at most one step in flight: bounds queued batches and memory
          jax.block_until_ready(history[-1])
        history.append(metrics)
        done = step + 1
        report.advance(done)
        if done % config.log_every_steps == 0 or done == total or stop.requested:
          nonfinite += check_history()
          scalars = _mean_metrics(history)
          scalars.pop("finite")
          scalars.update(report.rates(done), learning_rate=float(schedule(done - 1)),
                         nonfinite_steps=nonfinite)
          writer.write_scalars(done, scalars)
          report.update(done, scalars["loss"])
          history, history_start, checked = [], done, 0
        if stop.requested:
          nonfinite += check_history()
          manager.save(done, _unreplicate(state, num_devices))
          logging.warning("Received %s: saved the checkpoint at step %d; exiting. The next "
                          "start resumes there.", stop.signal_name, done)
          manager.close()
          writer.close()
          return {"preempted": True, "step": done}
        if done % config.eval_every_steps == 0 and done != total:
          nonfinite += check_history()
          results = _evaluate(config, model, _unreplicate(state, num_devices), pipe,
                              workdir, writer, done, final=False)
          manager.save(done, _unreplicate(state, num_devices),
                       metric=results["mpjpe_mm"][last_stage])
        elif done % config.checkpoint_every_steps == 0:
          nonfinite += check_history()
          manager.save(done, _unreplicate(state, num_devices))
    except BaseException:
      # Finish writing checkpoints already started: a crash never loses the last one.
      manager.close()
      writer.close()
      raise
    finally:
      report.close()
      batches.close()
  host_state = _unreplicate(state, num_devices)
  results = _evaluate(config, model, host_state, pipe, workdir, writer, total, final=True)
  if jax.process_index() == 0:
    visualize.plot_eval_clips(model, host_state.params, pipe.eval, pipe.norm,
                              os.path.join(workdir, workdir_lib.EVAL, "clips.png"))
  manager.save(total, host_state, metric=results["mpjpe_mm"][last_stage])
  manager.close()
  writer.close()
  return results


class _StopOnSignals:
  """Turns SIGTERM / SIGINT into a request the training loop honours after its step.

  A second signal of the same kind restores the default behaviour (so a repeated Ctrl-C
  still kills a stuck process). Only installed from the main thread.
  """

  def __init__(self):
    self.requested = False
    self.signal_name = ""
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False


def _unreplicate(state, num_devices):
  return jax_utils.unreplicate(state) if num_devices > 1 else state


def _evaluate(config, model, state, pipe, workdir, writer, step, final) -> dict:
  """Scores the eval split; the final evaluation also writes results.json and the table."""
  results = evaluate.evaluate(
      model, state.params, pipe.eval, pipe.norm, root_joint=config.dataset.root_joint,
      max_clips=0 if final else config.eval_max_clips)
  results["step"] = int(step)
  k = config.model.num_stages
  scalars = {f"eval/mpjpe_mm_stage_{i}": results["mpjpe_mm"][f"stage_{i}"]
             for i in range(1, k + 1)}
  scalars["eval/p_mpjpe_mm"] = results["p_mpjpe_mm"][f"stage_{k}"]
  scalars["eval/baseline_mean_pose_mpjpe_mm"] = results["baseline_mean_pose_mpjpe_mm"]
  writer.write_scalars(step, scalars)
  writer.flush()
  if final and jax.process_index() == 0:
    evaluate.write_results(results, os.path.join(workdir, workdir_lib.EVAL))
  return results


def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None) -> dict:
  """`--mode=eval`: scores the latest (or the given) checkpoint of `workdir`."""
  config_checks.check(config)
  if not workdir_lib.has_normalization(workdir):
    workdir_lib.load_normalization(workdir)   # raises, naming the file
  pipe = input_pipeline.create_pipeline(config, workdir)
  model = model_factory.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
  state = create_train_state(config, model, tx, jax.random.key(config.seed))
  manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  state = manager.restore(state, step)
  writer = metric_writers.MetricWriter(os.path.join(workdir, workdir_lib.EVAL),
                                       just_logging=jax.process_index() > 0)
  results = _evaluate(config, model, state, pipe, workdir, writer, int(state.step),
                      final=True)
  manager.close()
  writer.close()
  return results


