"""Training: `train_and_evaluate(config, workdir)` and `evaluate_checkpoint`.

The train step is written once, for one device's view of a batch (`train_step`).
`compile_train_step` decides how it runs (config.parallelism):
- "global" (default): `jax.jit` over a 1-D mesh of every process's devices, parameters
  and optimiser state replicated, the batch split along the mesh; each process builds
  only its rows of the global batch. The mean over the batch is the global mean.
- "pmap": `jax.pmap` over the local devices with `lax.pmean` across all processes'
  devices; its per-device copies meet the same global arrays at checkpoints and
  evaluation (rpsm_jax.parallel).
Multi-host runs start with rpsm_jax.distributed.initialize().
"""

import functools
import os
import signal
import threading
from typing import Optional

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np

from rpsm_jax import model_factory
from rpsm_jax import parallel
from rpsm_jax import poses
from rpsm_jax import workdir as workdir_lib
from rpsm_jax.cpu import autotune
from rpsm_jax.cpu import step_check
from rpsm_jax.evaluation import evaluate
from rpsm_jax.evaluation import visualize
from rpsm_jax.pipeline import input_pipeline
from rpsm_jax.training import checkpoints
from rpsm_jax.training import config_checks
from rpsm_jax.training import metric_writers
from rpsm_jax.training import optim
from rpsm_jax.training import pretrained
from rpsm_jax.training import progress
from rpsm_jax.training import run_lock
from rpsm_jax.training import trunk_cache

PMAP_AXIS = "devices"
# What the train step needs from a batch; "stop" (one flag per device) carries a stop
# request from any host into the step, whose max tells every host at the same step.
_STEP_KEYS = ("image", "features", "pose_3d", "mask")


class TrainState(train_state.TrainState):
  pass


def with_stop_flag(batch: dict, requested: bool = False) -> dict:
  """The step's part of this process's rows of a batch, with its stop flags (one per local
  device: 1.0 when this host asked to stop)."""
  out = {k: v for k, v in batch.items() if k in _STEP_KEYS}
  out["stop"] = np.full((jax.local_device_count(),), float(requested), np.float32)
  return out


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


def _norm(tree) -> jnp.ndarray:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def train_step(state: TrainState, batch, *, weights, max_update_ratio: float = 0.0,
               frozen_trunk: bool = False, axis_name: Optional[str] = None):
  """One optimiser step; returns (new_state, metrics).

  batch: image (B, T, S, S, 3) uint8 or, from a frozen trunk's cache, its features
  (B, T, S/8, S/8, C); pose_3d (B, T, P, 3), mask (B, T), stop (D,) float32
  (1 where a host asked to stop; D devices). Under jit over the mesh B is the global batch;
  under pmap, one device's part with `axis_name` the pmapped axis. `frozen_trunk`
  (config.model.freeze_trunk, whose optimiser gives the trunk zero updates): no gradient
  flows into params["trunk"], which spares the trunk's backward pass altogether.

  A step whose loss or gradients are not finite, or whose parameter update is larger than
  `max_update_ratio` x the parameters' norm (an exploded step: config.max_update_ratio, 0
  = no bound), leaves parameters and optimiser state unchanged (only the step counter
  advances) and reports finite=0, so neither NaN nor blown-up parameters reach a
  checkpoint; `config.nonfinite_policy` decides on the host whether training stops.
  """
  mask = batch["mask"].astype(jnp.float32)

  def loss_fn(params):
    if frozen_trunk:
      params = dict(params, trunk=jax.lax.stop_gradient(params["trunk"]))
    if "features" in batch:
      predicted = state.apply_fn({"params": params}, None,
                                 trunk_features=batch["features"])
    else:
      predicted = state.apply_fn({"params": params}, poses.model_input(batch["image"]))
    return pose_loss(predicted, batch["pose_3d"], mask, weights)

  (loss, per_stage), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  stop = jnp.max(batch["stop"])
  if axis_name is not None:
    grads, loss, per_stage = jax.lax.pmean((grads, loss, per_stage), axis_name)
    stop = jax.lax.pmax(stop, axis_name)
  grad_norm = _norm(grads)
  new_state = state.apply_gradients(grads=grads)
  update_norm = _norm(jax.tree.map(jnp.subtract, new_state.params, state.params))
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
  if max_update_ratio > 0:
    finite &= update_norm <= max_update_ratio * _norm(state.params)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                           state.replace(step=state.step + 1))
  metrics = {"loss": loss, "grad_norm": grad_norm, "update_norm": update_norm,
             "finite": finite.astype(jnp.float32), "stop": stop}
  metrics.update({f"loss_stage_{k + 1}": per_stage[k] for k in range(per_stage.shape[0])})
  return new_state, metrics


def compile_train_step(config, mesh):
  """`train_step` compiled for config.parallelism; the state is donated.

  "global": (replicated state, global batch split over `mesh`) -> (state, metrics), all
  replicated. "pmap": per-local-device copies and batch parts (see module docstring).
  """
  kwargs = dict(weights=stage_weights(config),
                max_update_ratio=float(config.get("max_update_ratio", 0.0)),
                frozen_trunk=bool(config.model.freeze_trunk))
  if config.parallelism == "pmap":
    return jax.pmap(functools.partial(train_step, axis_name=PMAP_AXIS, **kwargs),
                    axis_name=PMAP_AXIS, donate_argnums=0)
  rep = parallel.replicated(mesh)
  return jax.jit(functools.partial(train_step, **kwargs),
                 in_shardings=(rep, parallel.batch_sharded(mesh)),
                 out_shardings=(rep, rep), donate_argnums=0)


def create_train_state(config, model, tx, rng, mesh=None) -> TrainState:
  """Randomly initialised state; `config.model.freeze_trunk` gives the trunk no updates.

  With `mesh`, every leaf is a global array replicated on it (the same initial values on
  every process: they come from `rng` alone).
  """
  frames = poses.dummy_frames(config.clip_length, config.model.input_size)
  if config.model.freeze_trunk:
    tx = pretrained.freeze_trunk(tx)

  def init(rng):
    params = model.init(rng, frames)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  if mesh is None:
    return jax.jit(init)(rng)
  return jax.jit(init, out_shardings=parallel.replicated(mesh))(rng)


def cached_copies(config) -> int:
  """config.trunk_cache_copies where the trunk is frozen, else 0 (logged)."""
  copies = int(config.get("trunk_cache_copies", 0))
  if copies and not config.model.freeze_trunk:
    logging.info("config.trunk_cache_copies=%d ignored: the trunk trains, so it runs "
                 "every step", copies)
    return 0
  return copies


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
        f"non-finite loss or gradients, or an update above config.max_update_ratio x the "
        f"parameters' norm, at step {bad[0]} (of {len(bad)} in this interval); the update "
        "was not applied, and the last checkpoint holds the last good parameters. Set "
        "--config.nonfinite_policy=skip to skip such updates instead")
  return len(bad)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains on the train split, evaluates periodically and at the end; returns the final
  evaluation results (also written to <workdir>/eval/results.json).

  SIGTERM or SIGINT (preemption, Ctrl-C) on any host ends the current step on every host,
  saves one checkpoint there and returns {"preempted": True, "step": n}; the next start
  resumes from it. Every process of a multi-host run calls this alike. A restart runs the
  convolutions the run chose before (<workdir>/conv_choices.json).
  """
  with autotune.pinned(workdir_lib.path(workdir, workdir_lib.CONV_CHOICES)):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict:
  config_checks.check(config, jax.device_count())
  mesh = parallel.create_mesh()
  pmapped = config.parallelism == "pmap"
  os.makedirs(workdir, exist_ok=True)
  # One run per workdir (the lock is held until this returns), and no silent resume with
  # another model, data or seed.
  workdir_lock = run_lock.acquire(workdir)  # noqa: F841  (held, not used)
  workdir_lib.check_resume_config(config, workdir, config.get("allow_config_changes", False))
  pipe = input_pipeline.create_pipeline(
      config, workdir, shard=(jax.process_index(), jax.process_count()))
  model = model_factory.create_model(config.model)
  tx, schedule = optim.create_optimizer(config.optimizer, config.num_train_steps)
  state = create_train_state(config, model, tx, jax.random.key(config.seed), mesh)
  manager = checkpoints.Checkpoints(
      workdir, config.keep_checkpoints,
      allow_restart_from_scratch=config.get("allow_restart_from_scratch", False))
  state = manager.restore_latest(state)
  start = int(jax.device_get(state.step))
  if not start and config.model.trunk_init:  # a fresh run starts from pretrained layers
    params = pretrained.initialize_trunk(config.model.trunk_init, parallel.gather(
        state.params))
    state = state.replace(params=parallel.replicate(params, mesh))
  writer = metric_writers.MetricWriter(workdir, just_logging=jax.process_index() > 0)
  if start:
    logging.info("Resuming from the checkpoint at step %d", start)
  else:
    writer.write_hparams(config.to_dict())
  if jax.process_index() == 0:
    workdir_lib.save_config(config, workdir)

  # Not for a run that only re-evaluates (already at num_train_steps).
  copies = cached_copies(config) if start < config.num_train_steps else 0
  # The trunk's frames per call in evaluation (per device), so the cache reuses them.
  eval_frames = max(1, config.eval_batch_size * config.clip_length // jax.device_count())
  cache = (trunk_cache.TrunkCache.build(model, parallel.gather(state.params)["trunk"],
                                        pipe.train, copies, eval_frames)
           if copies else None)
  step_fn = compile_train_step(config, mesh)
  if pmapped:
    state = parallel.to_pmap(state)

  def global_state():
    return parallel.from_pmap(state, mesh) if pmapped else state

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

  batches = pipe.train.iterate(start_step=start, num_steps=total, cached_copies=copies)
  # The first step's convolutions get step_check's look (one program on every device).
  check_step = not pmapped and step_check.applicable(config.model)
  with _StopOnSignals() as stop:
    try:
      for step in range(start, total):
        batch = next(batches)
        if cache is not None:
          batch["features"] = cache.lookup(batch["record"], batch["copy"])
        batch = with_stop_flag(batch, stop.requested)
        if pmapped:
          batch = parallel.split_local_devices(batch)
        else:
          batch = parallel.global_batch(batch, mesh)
        if step == start and check_step:
          model, state = step_check.choose_model("3D training", model, step_fn, state, batch)
        state, metrics = step_fn(state, batch)
        # Keep one step in flight: bounds queued batches and memory, and reads the
        # previous step's agreed stop flag (the same on every host).
        agreed_stop = bool(history) and float(np.max(jax.device_get(history[-1]["stop"])))
        history.append(metrics)
        done = step + 1
        report.advance(done)
        if done % config.log_every_steps == 0 or done == total or agreed_stop:
          nonfinite += check_history()
          scalars = _mean_metrics(history)
          scalars.pop("finite")
          scalars.pop("stop")
          scalars.update(report.rates(done), learning_rate=float(schedule(done - 1)),
                         nonfinite_steps=nonfinite)
          writer.write_scalars(done, scalars)
          report.update(done, scalars["loss"])
          history, history_start, checked = [], done, 0
        if agreed_stop:
          manager.save(done, global_state())
          why = (f"Received {stop.signal_name}" if stop.requested
                 else "Another process received a stop signal")
          logging.warning("%s: saved the checkpoint at step %d (every process stops "
                          "there); exiting. The next start resumes there.", why, done)
          manager.close()
          writer.close()
          return {"preempted": True, "step": done}
        if done == total:
          break   # the final checkpoint is saved below, with its evaluation
        if done % config.eval_every_steps == 0:
          nonfinite += check_history()
          results = _evaluate(config, model, global_state(), pipe, writer, done,
                              final=False)
          manager.save(done, global_state(), metric=results["mpjpe_mm"][last_stage])
        elif done % config.checkpoint_every_steps == 0:
          nonfinite += check_history()
          manager.save(done, global_state())
    except BaseException:
      # Finish writing checkpoints already started: a crash never loses the last one.
      manager.close()
      writer.close()
      raise
    finally:
      report.close()
      batches.close()
  final_state = global_state()
  results = _evaluate(config, model, final_state, pipe, writer, total, final=True)
  if jax.process_index() == 0:
    visualize.plot_eval_clips(model, parallel.gather(final_state.params), pipe.eval,
                              pipe.norm, os.path.join(workdir, workdir_lib.EVAL,
                                                      "clips.png"))
  manager.save(total, final_state, metric=results["mpjpe_mm"][last_stage])
  manager.close()   # waits until the final checkpoint is complete on disk
  writer.close()
  # results.json marks the run finished (a rerun skips it), so it comes last: a run
  # killed before here resumes from its checkpoints and ends with the final one.
  _write_results(results, workdir)
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


def _write_results(results: dict, workdir: str) -> None:
  if jax.process_index() == 0:
    evaluate.write_results(results, os.path.join(workdir, workdir_lib.EVAL))


def _evaluate(config, model, state, pipe, writer, step, final) -> dict:
  """Scores the eval split (the whole split when `final`, else config.eval_max_clips
  clips) and logs the scores; returns the results."""
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
  return results


def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None) -> dict:
  """`--mode=eval`: scores the latest (or the given) checkpoint of `workdir`."""
  config_checks.check(config, jax.device_count())
  if not workdir_lib.has_normalization(workdir):
    workdir_lib.load_normalization(workdir)   # raises, naming the file
  pipe = input_pipeline.create_pipeline(
      config, workdir, shard=(jax.process_index(), jax.process_count()))
  model = model_factory.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
  state = create_train_state(config, model, tx, jax.random.key(config.seed),
                             parallel.create_mesh())
  manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  state = manager.restore(state, step)
  writer = metric_writers.MetricWriter(os.path.join(workdir, workdir_lib.EVAL),
                                       just_logging=jax.process_index() > 0)
  results = _evaluate(config, model, state, pipe, writer,
                      int(jax.device_get(state.step)), final=True)
  manager.close()
  writer.close()
  _write_results(results, workdir)
  return results


