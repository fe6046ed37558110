"""The paper's training recipe in one call: 2D pretraining of the trunk, then 3D.

Phase 1 (`config.pretrain2d.enabled`): the shared trunk plus a heatmap head learn joint
heatmaps (training/pretrain2d.py) on `config.pretrain2d.dataset` (MPII for Human3.6M as
the authors did, or the 3D dataset's own frames and 2D joints) in
<workdir>/pretrain2d (or `config.pretrain2d.workdir`, e.g. one pretraining shared by
several 3D runs). Phase 2: the RPSM trains on 3D poses (training/train.py) in <workdir>,
its trunk initialised from phase 1's last checkpoint and, with
`config.pretrain2d.trunk='frozen'`, kept fixed as in the authors' released recipe
('finetune' trains it with everything else).

Each phase resumes from its own checkpoints and a finished phase (its results file at
its final step) is skipped, so rerunning the same command after an interruption, or
after it finished, costs only what is left.
"""

import json
import os
from typing import Optional

from absl import logging
import ml_collections

from rpsm_jax import workdir as workdir_lib

PRETRAIN_DIR = "pretrain2d"
PRETRAIN_RESULTS = "pretrain2d_results.json"
TRUNK_MODES = ("finetune", "frozen")


def pretrain_workdir(config, workdir: str) -> str:
  """Where phase 1 writes: config.pretrain2d.workdir, else <workdir>/pretrain2d."""
  where = config.pretrain2d.get("workdir", "")
  return os.path.expanduser(where) if where else os.path.join(workdir, PRETRAIN_DIR)


def _read_json(filename: str) -> Optional[dict]:
  try:
    with open(filename) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None  # absent or half-written: the phase runs (and resumes) again


def finished_pretraining(config, pre_dir: str) -> Optional[dict]:
  """Phase 1's results when it reached config.pretrain2d.num_train_steps, else None."""
  results = _read_json(os.path.join(pre_dir, PRETRAIN_RESULTS))
  if results and results.get("step") == config.pretrain2d.num_train_steps:
    return results
  return None


def finished_training(config, workdir: str) -> Optional[dict]:
  """Phase 2's final evaluation when it reached config.num_train_steps, else None."""
  results = _read_json(os.path.join(workdir, workdir_lib.EVAL, "results.json"))
  if results and results.get("step") == config.num_train_steps:
    return results
  return None


def uses_pretraining(config) -> bool:
  """True when phase 1 runs: enabled and no trunk_init given by hand (that one wins)."""
  return bool(config.pretrain2d.get("enabled", False)) and not config.model.trunk_init


def phase2_config(config, workdir: str) -> ml_collections.ConfigDict:
  """The 3D run's config: config with the trunk taken from phase 1 (and maybe frozen).

  The same config serves --mode=eval on a recipe's workdir, so its train state (the
  frozen trunk holds no optimiser state) matches the saved one.
  """
  if not uses_pretraining(config):
    return config
  mode = config.pretrain2d.get("trunk", "finetune")
  if mode not in TRUNK_MODES:
    raise ValueError(f"config.pretrain2d.trunk must be one of {TRUNK_MODES}, got {mode!r}")
  out = ml_collections.ConfigDict(config.to_dict())
  out.model.trunk_init = f"checkpoint:{os.path.abspath(pretrain_workdir(config, workdir))}"
  out.model.freeze_trunk = mode == "frozen"
  return out


def run(config, workdir: str) -> dict:
  """Runs (or resumes, or skips) both phases; returns phase 2's final evaluation.

  Returns {"preempted": True, "step": n} when a signal stopped phase 2 (see
  train.train_and_evaluate); phase 1 is resumable the same way through its checkpoints.
  Results: <workdir>/pretrain2d/pretrain2d_results.json, <workdir>/eval/results.json.
  """
  # Imported here: training pulls in the models and the input pipeline.
  from rpsm_jax.training import pretrain2d  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import train  # pylint: disable=g-import-not-at-top
  if config.pretrain2d.get("enabled", False) and config.model.trunk_init:
    logging.info("config.model.trunk_init=%s given: skipping 2D pretraining",
                 config.model.trunk_init)
  if uses_pretraining(config):
    pre_dir = pretrain_workdir(config, workdir)
    done = finished_pretraining(config, pre_dir)
    if done:
      logging.info("Phase 1 (2D pretraining) already finished in %s: %s", pre_dir, done)
    else:
      logging.info("Phase 1: 2D pretraining of the trunk in %s", pre_dir)
      pretrain2d.pretrain(config, pre_dir)
  cfg = phase2_config(config, workdir)
  done = finished_training(cfg, workdir)
  if done:
    logging.info("Phase 2 (3D) already finished in %s", workdir)
    return done
  logging.info("Phase 2: 3D training in %s (trunk: %s)", workdir,
               cfg.model.trunk_init or "random")
  return train.train_and_evaluate(cfg, workdir)
