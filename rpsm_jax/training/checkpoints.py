"""Orbax checkpoints of the train state: one manager keeps the last N and the best by MPJPE.

<workdir>/checkpoints/<step>/ holds each saved step once. Orbax's preservation policy keeps
the newest `keep` steps plus the one with the lowest evaluation MPJPE (saved with its metric),
so the best survives rotation without a second copy. Orbax writes each checkpoint into a
temporary directory and renames it when complete, so a process killed mid-save leaves no
directory that `latest_step()` would take for a checkpoint. The data position needs no
saving: batch `step` is a pure function of (seed, step).

Every process calls save and restore with the same global arrays (multi-host runs); Orbax
writes each array's shards from the processes that hold them.
"""

import os
from typing import Any, Optional

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from rpsm_jax import workdir as workdir_lib

METRIC = "mpjpe_mm"


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), workdir_lib.CHECKPOINTS)


def _metric(metrics: Optional[dict]) -> float:
  return float(metrics[METRIC])


def _manager(workdir: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  policy = policies.AnyPreservationPolicy([
      policies.LatestN(keep),
      policies.BestN(get_metric_fn=_metric, reverse=True, n=1,
                     keep_checkpoints_without_metrics=False)])
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(
          create=not read_only, read_only=read_only, preservation_policy=policy,
          best_fn=_metric, best_mode="min", keep_checkpoints_without_metrics=True))


class Checkpoints:
  """The run's checkpoints: save, find the latest or the best, restore."""

  def __init__(self, workdir: str, keep: int):
    self.manager = _manager(workdir, keep)

  @property
  def directory(self) -> str:
    return str(self.manager.directory)

  def steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def best_step(self) -> Optional[int]:
    return self.manager.best_step()

  def best_metric(self) -> Optional[float]:
    step = self.best_step()
    if step is None:
      return None
    metrics = self.manager.metrics(step)
    return None if not metrics or METRIC not in metrics else float(metrics[METRIC])

  def save(self, step: int, state: Any, metric: Optional[float] = None) -> None:
    """Saves `state` at `step` (once), with its evaluation MPJPE when given."""
    if step in self.manager.all_steps():
      return
    metrics = None if metric is None else {METRIC: float(metric)}
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

  def restore_latest(self, state: Any) -> Any:
    """`state` restored from the latest checkpoint, or `state` itself when there is none."""
    step = self.manager.latest_step()
    if step is None:
      return state
    return self.manager.restore(step, args=ocp.args.StandardRestore(state))

  def restore(self, state: Any, step: Optional[int] = None, best: bool = False) -> Any:
    """Restores the given step (default: latest, or the best when `best`)."""
    step = _pick(self.manager, step, best)
    return self.manager.restore(step, args=ocp.args.StandardRestore(state))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _pick(manager: ocp.CheckpointManager, step: Optional[int], best: bool) -> int:
  if step is None:
    step = manager.best_step() if best else manager.latest_step()
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(
        f"no {'best ' if best and step is None else ''}checkpoint"
        f"{'' if step is None else f' at step {step}'} in {manager.directory}; available "
        f"steps: {list(manager.all_steps())}")
  return step


def find(workdir: str, step: Optional[int] = None, best: bool = False) -> tuple[int, str]:
  """(step, directory of that checkpoint) for the given, latest or best step of a run."""
  if not os.path.isdir(directory(workdir)):
    raise FileNotFoundError(f"{directory(workdir)} is missing: {workdir} holds no "
                            "checkpoint yet")
  manager = _manager(workdir, keep=1, read_only=True)
  try:
    step = _pick(manager, step, best)
  finally:
    manager.close()
  return step, os.path.join(directory(workdir), str(step))
