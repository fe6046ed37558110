"""Orbax checkpoints of the train state: the last N, plus the best by evaluation MPJPE.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
process killed mid-save leaves no directory that `latest_step()` would take for a checkpoint.
The data position needs no saving: batch `step` is a pure function of (seed, step).
"""

import os
from typing import Optional

import orbax.checkpoint as ocp

_BEST_KEY = "mpjpe_mm"


class Checkpoints:
  """<workdir>/checkpoints keeps the last `keep`; <workdir>/best keeps the lowest MPJPE."""

  def __init__(self, workdir: str, keep: int):
    root = os.path.abspath(workdir)
    self.latest = ocp.CheckpointManager(
        os.path.join(root, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m[_BEST_KEY], best_mode="min"))

  def best_metric(self) -> Optional[float]:
    step = self.best.best_step()
    if step is None:
      return None
    metrics = self.best.metrics(step)
    return None if not metrics else float(metrics[_BEST_KEY])

  def save(self, step: int, state, metric: Optional[float] = None) -> None:
    """Saves `state` at `step`; also as the best when `metric` beats the best so far."""
    if step not in self.latest.all_steps():
      self.latest.save(step, args=ocp.args.StandardSave(state))
    best = self.best_metric()
    if metric is not None and (best is None or metric < best):
      self.best.save(step, args=ocp.args.StandardSave(state), metrics={_BEST_KEY: metric},
                     force=True)

  def restore_latest(self, state):
    """`state` restored from the latest checkpoint, or `state` itself when there is none."""
    step = self.latest.latest_step()
    if step is None:
      return state
    return self.latest.restore(step, args=ocp.args.StandardRestore(state))

  def restore(self, state, step: Optional[int] = None, best: bool = False):
    """Restores the given step (default: latest, or the best when `best`)."""
    manager = self.best if best else self.latest
    if step is None:
      step = manager.best_step() if best else manager.latest_step()
    if step is None or step not in manager.all_steps():
      raise FileNotFoundError(
          f"no checkpoint {'' if step is None else f'at step {step} '}in "
          f"{manager.directory}; available steps: {list(manager.all_steps())}")
    return manager.restore(step, args=ocp.args.StandardRestore(state))

  def close(self) -> None:
    for manager in (self.latest, self.best):
      manager.wait_until_finished()
      manager.close()
