"""A training run's directory: every file in it, how each is written and read back.

<workdir>/
  config.json          the ConfigDict the run trained with (what eval, predict, export rebuild)
  normalization.json   the training split's statistics (poses.Normalization), so outputs
                       un-normalise exactly as training normalised, even after a rebuild
  checkpoints/<step>/  Orbax checkpoints of the train state (last N, and the best by MPJPE)
  eval/                results.json, results.md, clips.png; TensorBoard events of --mode=eval
  metrics.jsonl, events.out.tfevents.*   training metrics

Files are written atomically (temporary file + rename). Errors name the file and what to do.
"""

import json
import os
from typing import Any, Optional

import ml_collections
import orbax.checkpoint as ocp

from rpsm_jax import poses

CONFIG = "config.json"
NORMALIZATION = "normalization.json"
CHECKPOINTS = "checkpoints"
EVAL = "eval"


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


class RunFileError(ValueError):
  """A run directory's file is missing or unreadable (the message names it)."""


def _write_atomic(filename: str, text: str) -> None:
  tmp = f"{filename}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, filename)  # a crash never leaves a half-written file


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


def restore_params(checkpoint_dir: str, abstract_params: Optional[Any] = None) -> Any:
  """The parameters of one saved train state (<run>/checkpoints/<step>), without its
  optimiser state.

  abstract_params: the expected tree (arrays or jax.ShapeDtypeStruct) to restore into;
  None restores the saved tree as it is (nested dicts of arrays).
  """
  item = os.path.join(os.path.abspath(checkpoint_dir), "default")
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    if abstract_params is None:
      state = checkpointer.restore(item)
      if not isinstance(state, dict) or "params" not in state:
        raise RunFileError(f"{checkpoint_dir}: the saved state has no 'params'")
      return state["params"]
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
    return checkpointer.restore(item, args=ocp.args.PyTreeRestore(
        item={"params": abstract_params}, restore_args={"params": restore_args},
        partial_restore=True))["params"]
  finally:
    checkpointer.close()
