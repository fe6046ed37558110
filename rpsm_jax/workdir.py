"""A training run's directory: every file in it, how each is written and read back.

<workdir>/
  config.json          the ConfigDict the run trained with (what eval, predict, export rebuild)
  normalization.json   the training split's statistics (poses.Normalization), so outputs
                       un-normalise exactly as training normalised, even after a rebuild
  checkpoints/<step>/  Orbax checkpoints of the train state (last N, and the best by MPJPE)
  checkpoint_steps.json  the steps checkpointed so far (a deleted checkpoints/ is noticed)
  checkpoints_damaged/   checkpoints a restart found damaged and skipped
  .lock                the running job's lock (training/run_lock.py): pid and host
  conv_choices.json    conv_algorithm "auto"'s choices this run made (layers and whole
                       steps: rpsm_jax.cpu.autotune.pinned), which a restart runs again
  eval/                results.json, results.md, clips.png; TensorBoard events of --mode=eval
  metrics.jsonl, events.out.tfevents.*   training metrics

Files are written atomically (temporary file + rename). Errors name the file and what to do.
"""

import json
import os
from typing import Any, Optional

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from rpsm_jax import poses

CONFIG = "config.json"
NORMALIZATION = "normalization.json"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
CONV_CHOICES = "conv_choices.json"


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


class RunFileError(ValueError):
  """A run directory's file is missing or unreadable (the message names it)."""


def write_atomic(filename: str, text: str) -> None:
  """Writes `text` to `filename` through a temporary file and a rename."""
  tmp = f"{filename}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, filename)  # a crash never leaves a half-written file


_write_atomic = write_atomic


def _read_json(workdir: str, name: str, what: str) -> Any:
  filename = path(workdir, name)
  if not os.path.exists(filename):
    raise FileNotFoundError(f"{filename} is missing: is {workdir} a training workdir?")
  try:
    with open(filename) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RunFileError(f"{filename} is not valid JSON ({e}): it should hold {what}. Restore "
                       f"it from a backup, or delete it to have training recompute it"
                       ) from e


def save_config(config, workdir: str) -> None:
  """Writes <workdir>/config.json."""
  _write_atomic(path(workdir, CONFIG), config.to_json(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run saved in its workdir."""
  return ml_collections.ConfigDict(_read_json(workdir, CONFIG, "the run's config"))


def save_normalization(norm: poses.Normalization, workdir: str) -> None:
  _write_atomic(path(workdir, NORMALIZATION), json.dumps(norm.to_json()))


def has_normalization(workdir: str) -> bool:
  return os.path.exists(path(workdir, NORMALIZATION))


def load_normalization(workdir: str) -> poses.Normalization:
  """<workdir>/normalization.json; errors name the file and the field at fault."""
  d = _read_json(workdir, NORMALIZATION, "the training split's pose statistics")
  try:
    return poses.Normalization.from_json(d)
  except (KeyError, TypeError, ValueError) as e:
    raise RunFileError(f"{path(workdir, NORMALIZATION)}: bad or missing field ({e!r}); "
                       "expected minimum, maximum, mean_pose (P x 3 mm) and root_joint"
                       ) from e


def restore_numpy(checkpoint_dir: str) -> Any:
  """One saved train state (<run>/checkpoints/<step>) as it was saved, numpy leaves in
  nested dicts, whatever the number of processes that wrote it (its saved shardings name
  their devices, so a plain restore fails elsewhere)."""
  item = _item_dir(checkpoint_dir)
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(item).tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return handler.restore(item, args=ocp.args.PyTreeRestore(restore_args=args))
  finally:
    handler.close()


def _item_dir(checkpoint_dir: str) -> epath.Path:
  """The train state's folder in a checkpoint. Read with a PyTreeCheckpointHandler, not a
  Checkpointer: the step's metadata file sits one level up, and a Checkpointer on the
  item warns that it is missing."""
  return epath.Path(os.path.abspath(checkpoint_dir)) / "default"


def restore_params(checkpoint_dir: str, abstract_params: Optional[Any] = None) -> Any:
  """The parameters of one saved train state (<run>/checkpoints/<step>), without its
  optimiser state.

  abstract_params: the expected tree (arrays or jax.ShapeDtypeStruct) to restore into;
  None restores the saved tree as it is (nested dicts of numpy arrays).
  """
  if abstract_params is None:
    state = restore_numpy(checkpoint_dir)
    if not isinstance(state, dict) or "params" not in state:
      raise RunFileError(f"{checkpoint_dir}: the saved state has no 'params'")
    return state["params"]
  item = _item_dir(checkpoint_dir)
  handler = ocp.PyTreeCheckpointHandler()
  # Onto this process's first device unless told otherwise: the saved shardings may name
  # devices of processes that no longer exist (a multi-host run restored for inference).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract_params = jax.tree.map(
      lambda x: x if getattr(x, "sharding", None) is not None else
      jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_params)
  try:
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
    return handler.restore(item, args=ocp.args.PyTreeRestore(
        item={"params": abstract_params}, restore_args={"params": restore_args},
        partial_restore=True))["params"]
  finally:
    handler.close()


# Config fields a resumed run must keep: they define the model (and so the checkpoint's
# arrays), the data it sees, or the seed that fixes batches and augmentation. Paths, worker
# counts, the convolution implementation and policies may change between restarts.
_RESUME_FIELDS = ("seed", "model", "dataset", "clip_length", "clip_stride", "frame_step",
                  "augment", "trunk_cache_copies", "batch_size", "loss_stage_weights",
                  "optimizer.name")
_FREE_FIELDS = ("model.conv_algorithm", "model.winograd_tile", "model.remat_trunk",
                "model.trunk_init", "dataset.data_dir", "dataset.manual_dir",
                "dataset.build_if_missing", "dataset.num_workers",
                "dataset.corrupt_records")


def _flatten(d: Any, prefix: str = "") -> dict:
  """Nested dicts / ConfigDicts -> {"a.b.c": value}."""
  if isinstance(d, ml_collections.ConfigDict):
    d = d.to_dict()
  out = {}
  for k, v in d.items():
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _guarded(field: str) -> bool:
  def under(f, prefixes):
    return any(f == p or f.startswith(p + ".") for p in prefixes)
  return under(field, _RESUME_FIELDS) and not under(field, _FREE_FIELDS)


def config_changes(saved: Any, new: Any) -> list[str]:
  """'field: saved -> new' for every field defining the model, the data or the seed that
  differs between a run's saved config and the config it is resumed with."""
  # Through JSON, as config.json holds it: tuples and lists compare alike.
  a = json.loads(json.dumps(_flatten(saved)))
  b = json.loads(json.dumps(_flatten(new)))
  missing = "<absent>"
  return [f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}"
          for k in sorted(set(a) | set(b))
          if _guarded(k) and a.get(k, missing) != b.get(k, missing)]


def has_checkpoints(workdir: str) -> bool:
  """True when <workdir>/checkpoints holds a step folder (what a restart resumes from)."""
  folder = path(workdir, CHECKPOINTS)
  return os.path.isdir(folder) and any(d.isdigit() for d in os.listdir(folder))


def check_resume_config(config, workdir: str, allow: bool = False) -> None:
  """Before resuming `workdir`: raises ConfigChangeError naming the model, data or seed
  fields `config` changes from the run's config.json, unless `allow` (then warns)."""
  if not (has_checkpoints(workdir) and os.path.exists(path(workdir, CONFIG))):
    return   # a new run (or one with nothing to resume): nothing to compare with
  changes = config_changes(load_config(workdir), config)
  if not changes:
    return
  message = (f"resuming {workdir} with a config that changes {len(changes)} field(s) of "
             f"the model, the data or the seed saved in {path(workdir, CONFIG)}: "
             f"{'; '.join(changes)}")
  if not allow:
    raise ConfigChangeError(
        f"{message}. Resume with the saved values, use a new workdir, or set "
        "--config.allow_config_changes=True to resume anyway")
  logging.warning("%s (allowed by config.allow_config_changes)", message)


class ConfigChangeError(ValueError):
  """A resume would change the model, the data or the seed (the message names them)."""
