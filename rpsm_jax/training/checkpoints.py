"""Orbax checkpoints of the train state: one manager keeps the last N and the best by MPJPE.

<workdir>/checkpoints/<step>/ holds each saved step once. Orbax's preservation policy keeps
the newest `keep` steps plus the one with the lowest evaluation MPJPE (saved with its metric),
so the best survives rotation without a second copy. Orbax writes each checkpoint into a
temporary directory and renames it when complete, so a process killed mid-save leaves no
directory that `latest_step()` would take for a checkpoint. The data position needs no
saving: batch `step` is a pure function of (seed, step).

Every process calls save and restore with the same global arrays (multi-host runs); Orbax
writes each array's shards from the processes that hold them.

Trust (issue 18):
- Each save records, in the step's own Orbax metadata (written with the checkpoint), the
  shape, dtype and SHA-256 of every leaf of what it saved. A restore re-hashes what it read
  and compares, so flipped bits, truncated or missing files are caught, not trained on.
- `restore_latest` skips a damaged or unreadable newest checkpoint with a warning naming the
  step, the file or array at fault, moves it to <workdir>/checkpoints_damaged/ (so the
  resumed run can save that step again) and resumes from the newest intact one.
- It never starts from scratch over existing checkpoints (or over steps that
  <workdir>/checkpoint_steps.json says were saved, when checkpoints/ was deleted) unless
  `allow_restart_from_scratch`; then the old checkpoints/ is moved aside, never overwritten,
  so a fresh run cannot replace the old best.
Every process takes the same decisions: each verifies its own (replicated) copy and all
agree on the result; only process 0 moves folders or writes side files.
"""

import hashlib
import json
import os
import re
import shutil
import time
from typing import Any, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from rpsm_jax import workdir as workdir_lib

METRIC = "mpjpe_mm"
DIGEST = "rpsm_digest"               # key of the per-leaf digests in the step's metadata
DAMAGED = "checkpoints_damaged"      # where restore moves unusable steps
STEPS_LOG = "checkpoint_steps.json"  # steps saved so far (survives deleting checkpoints/)
# Files every complete StandardSave step holds; named when missing or empty.
_REQUIRED = ("_CHECKPOINT_METADATA", os.path.join("default", "_METADATA"),
             os.path.join("default", "manifest.ocdbt"))


class CheckpointError(RuntimeError):
  """No checkpoint can be used (the message names the steps, files and what to do)."""


class CheckpointMismatchError(CheckpointError):
  """A checkpoint is intact but does not fit the model being restored (config change)."""


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), workdir_lib.CHECKPOINTS)


def _metric(metrics: Optional[dict]) -> float:
  return float(metrics[METRIC])


def _manager(workdir: str, keep: int, create: bool = True) -> ocp.CheckpointManager:
  policy = policies.AnyPreservationPolicy([
      policies.LatestN(keep),
      policies.BestN(get_metric_fn=_metric, reverse=True, n=1,
                     keep_checkpoints_without_metrics=False)])
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(
          create=create, preservation_policy=policy,
          best_fn=_metric, best_mode="min", keep_checkpoints_without_metrics=True))


# --------------------------------------------------------------------------- digests


def _host_copy(x) -> np.ndarray:
  """A leaf's full value on this host: replicated global arrays give their local copy."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      raise ValueError("checkpoint digests need replicated (or addressable) arrays")
    x = x.addressable_data(0)
  return np.asarray(jax.device_get(x))


def digest(state: Any) -> dict[str, list]:
  """{leaf path: [shape, dtype, sha256 of its bytes]} for every array leaf of `state`."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    value = _host_copy(leaf)   # tobytes() is C order whatever the layout
    out[jax.tree_util.keystr(path)] = [list(value.shape), str(value.dtype),
                                       hashlib.sha256(value.tobytes()).hexdigest()]
  return out


def _shape_mismatches(recorded: dict, template: Any) -> list[str]:
  """Leaves whose recorded shape/dtype differ from the template's (a config change)."""
  wanted = {jax.tree_util.keystr(p): [list(np.shape(x)), str(np.dtype(
      x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype))]
            for p, x in jax.tree_util.tree_flatten_with_path(template)[0]}
  out = [f"{k}: saved {recorded[k][0]} {recorded[k][1]}, model {v[0]} {v[1]}"
         for k, v in wanted.items() if k in recorded and list(recorded[k][:2]) != list(v)]
  out += [f"{k}: not in the checkpoint" for k in wanted if k not in recorded]
  out += [f"{k}: in the checkpoint, not in the model" for k in recorded if k not in wanted]
  return out


def _all_agree(ok: bool) -> bool:
  """True when `ok` holds on every process (the same decision everywhere)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _stamp() -> str:
  return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


# --------------------------------------------------------------------------- manager


class Checkpoints:
  """The run's checkpoints: save, find the latest or the best, restore (verified)."""

  def __init__(self, workdir: str, keep: int, allow_restart_from_scratch: bool = False):
    self.workdir = os.path.abspath(workdir)
    self.keep = keep
    self.allow_restart_from_scratch = allow_restart_from_scratch
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
    """Saves `state` at `step` (once), with its evaluation MPJPE when given, and the digest
    of every leaf in the step's metadata."""
    if step in self.manager.all_steps():
      return
    # The previous (asynchronous) save must be complete before it counts as saved.
    self.manager.wait_until_finished()
    self._log_steps()
    metrics = None if metric is None or not np.isfinite(metric) else {METRIC: float(metric)}
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True,
                      custom_metadata={DIGEST: digest(state)})

  def _log_steps(self) -> None:
    """Records the finished steps outside checkpoints/ (process 0), so a run whose
    checkpoints/ was deleted knows it had some."""
    steps = list(self.manager.all_steps())
    if jax.process_index() != 0 or not steps:
      return
    path = os.path.join(self.workdir, STEPS_LOG)
    old = _read_steps_log(self.workdir)
    workdir_lib.write_atomic(path, json.dumps(
        {"steps": sorted(set(old) | set(steps)), "best": self.manager.best_step()}))

  # ------------------------------------------------------------------ restore

  def _problem(self, step: int, state: Any) -> tuple[Optional[str], Any]:
    """(None, restored state) for an intact checkpoint, else (what is wrong, None).

    Raises CheckpointMismatchError when the checkpoint is intact but saved for another
    model (its recorded shapes differ from `state`'s): that is a config change, not damage.
    """
    step_dir = os.path.join(self.directory, str(step))
    missing = [os.path.join(step_dir, f) for f in _REQUIRED
               if not os.path.isfile(os.path.join(step_dir, f))
               or not os.path.getsize(os.path.join(step_dir, f))]
    if missing:
      return f"missing or empty file {', '.join(missing)}", None
    try:
      recorded = (self.manager.metadata(step).custom_metadata or {}).get(DIGEST)
    except Exception as e:  # pylint: disable=broad-except
      return (f"unreadable {os.path.join(step_dir, '_CHECKPOINT_METADATA')} "
              f"({type(e).__name__}: {e})"), None
    if recorded:
      mismatch = _shape_mismatches(recorded, state)
      if mismatch:
        raise CheckpointMismatchError(
            f"the checkpoint at step {step} ({step_dir}) was saved for another model: "
            f"{'; '.join(mismatch[:5])}. Was the config changed? Resume with the run's "
            f"config ({os.path.join(self.workdir, workdir_lib.CONFIG)}) or use a new "
            "workdir")
    try:
      restored = self.manager.restore(step, args=ocp.args.StandardRestore(state))
    except Exception as e:  # pylint: disable=broad-except
      self._reopen()   # a failed restore can leave the manager's event loop unusable
      return _describe_error(e, step_dir), None
    if not recorded:
      logging.warning("The checkpoint at step %d (%s) records no digest (saved by an older "
                      "version): restored without verification", step, step_dir)
      return None, restored
    got = digest(restored)
    bad = [k for k, v in recorded.items() if got.get(k) != v]
    if bad:
      return (f"{len(bad)} array(s) differ from the digest recorded at save in "
              f"{os.path.join(step_dir, '_CHECKPOINT_METADATA')} (flipped bits in "
              f"{os.path.join(step_dir, 'default')}?): {', '.join(bad[:5])}"), None
    return None, restored

  def _reopen(self) -> None:
    try:
      self.manager.close()
    except Exception:  # pylint: disable=broad-except
      pass
    self.manager = _manager(self.workdir, self.keep)

  def _verified(self, step: int, state: Any) -> tuple[Optional[str], Any]:
    """`_problem` agreed across processes (a step is good only if good everywhere)."""
    problem, restored = self._problem(step, state)
    if not _all_agree(problem is None):
      return problem or "unreadable on another process", None
    return problem, restored

  def _set_aside(self, step: int, problem: str) -> None:
    """Moves an unusable step out of checkpoints/ (process 0) so it can be saved again."""
    src = os.path.join(self.directory, str(step))
    dst = os.path.join(self.workdir, DAMAGED, f"{step}-{_stamp()}")
    logging.warning("Skipping the checkpoint at step %d: %s. Moved it to %s", step,
                    problem, dst)
    self.manager.wait_until_finished()
    if jax.process_index() == 0 and os.path.isdir(src):
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      shutil.move(src, dst)
    _barrier(f"rpsm_set_aside_{step}")
    self._reopen()

  def restore_latest(self, state: Any) -> Any:
    """`state` restored from the newest intact checkpoint, or `state` itself when the run
    has none. Damaged newer ones are skipped (warned, moved to checkpoints_damaged/).

    Raises CheckpointError when checkpoints exist (or were saved, per checkpoint_steps.json)
    but none is usable, unless allow_restart_from_scratch: then checkpoints/ is moved aside
    and `state` returned.
    """
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      problem, restored = self._verified(step, state)
      if problem is None:
        if damaged:
          logging.warning("Resuming from step %d, the newest intact checkpoint", step)
        return restored
      damaged.append(f"step {step}: {problem}")
      self._set_aside(step, problem)
    logged = _read_steps_log(self.workdir)
    if not damaged and not logged:
      return state    # a new run
    what = ("; ".join(damaged) if damaged else
            f"{os.path.join(self.workdir, STEPS_LOG)} lists checkpoints at steps "
            f"{logged} but {self.directory} holds none (deleted?)")
    if not self.allow_restart_from_scratch:
      raise CheckpointError(
          f"no usable checkpoint in {self.directory} ({what}); damaged ones are in "
          f"{os.path.join(self.workdir, DAMAGED)}. Restore checkpoints from a backup, or set "
          "--config.allow_restart_from_scratch=True to start this run again from step 0 "
          "(the old checkpoints are kept aside, never overwritten)")
    self._start_over(what)
    return state

  def _start_over(self, why: str) -> None:
    """Moves checkpoints/ and the steps log aside (process 0): a fresh run's saves can
    then never replace the old best."""
    stamp = _stamp()
    self.manager.wait_until_finished()
    self.manager.close()
    if jax.process_index() == 0:
      for name in (workdir_lib.CHECKPOINTS, STEPS_LOG):
        src = os.path.join(self.workdir, name)
        if os.path.exists(src):
          os.replace(src, f"{src}.before-{stamp}")
    _barrier("rpsm_start_over")
    logging.warning("Starting from step 0 (allow_restart_from_scratch): %s. The old "
                    "checkpoints are in %s.before-%s", why, self.directory, stamp)
    self.manager = _manager(self.workdir, self.keep)

  def restore(self, state: Any, step: Optional[int] = None, best: bool = False) -> Any:
    """Restores the given step (default: latest, or the best when `best`), verified
    against its digest; raises CheckpointError naming what is wrong."""
    step = _pick(self.manager, step, best)
    problem, restored = self._verified(step, state)
    if problem is not None:
      raise CheckpointError(f"the checkpoint at step {step} in {self.directory} is "
                            f"damaged: {problem}")
    return restored

  def close(self) -> None:
    self.manager.wait_until_finished()
    self._log_steps()
    self.manager.close()


def _describe_error(error: Exception, step_dir: str) -> str:
  """One line for a failed restore: the error, and the file and array it names, if any
  (tensorstore's messages bury them in a spec dump)."""
  chain, e = [], error
  while e is not None and len(chain) < 5:
    chain.append(e)
    e = e.__cause__ or e.__context__
  text = "\n".join(str(x) for x in chain)
  first = next((line for line in text.splitlines() if line.strip()), "")[:300]
  files = [f for f in re.findall(r'"(/[^"]+)"', text) if f.startswith(step_dir)]
  arrays = re.findall(r"'path': '([^/'][^']*?)/?',", text)
  where = f"file {files[0]}" if files else f"files under {step_dir}"
  return (f"unreadable {where}{f', array {arrays[0]}' if arrays else ''} "
          f"({type(error).__name__}: {first})")


def _read_steps_log(workdir: str) -> list[int]:
  path = os.path.join(os.path.abspath(workdir), STEPS_LOG)
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      return [int(s) for s in json.load(f)["steps"]]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise workdir_lib.RunFileError(
        f"{path} is unreadable ({e}): it lists the steps this run checkpointed. Delete it "
        "if checkpoints/ is complete") from e


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
  manager = _manager(workdir, keep=1, create=False)   # only reads: never saves
  try:
    step = _pick(manager, step, best)
  finally:
    manager.close()
  return step, os.path.join(directory(workdir), str(step))
