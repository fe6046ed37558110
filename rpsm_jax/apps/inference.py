"""A trained run restored for inference (predict, streaming, export), without the dataset.

A run's workdir (rpsm_jax.workdir) holds config.json, normalization.json and Orbax
checkpoints; `load_run` turns it back into a model, its parameters and its statistics.
"""

import dataclasses
from typing import Any, Optional

import jax
import ml_collections

from rpsm_jax import joints
from rpsm_jax import model_factory
from rpsm_jax import poses
from rpsm_jax import workdir as workdir_lib
from rpsm_jax.training import checkpoints


@dataclasses.dataclass
class Run:
  """A trained run ready for inference.

  Attributes:
    config: the run's saved ConfigDict.
    model: the RPSM module it describes.
    params: restored parameters.
    norm: the training split's normalisation statistics (mm).
    step: the checkpoint step the parameters come from.
    workdir: where the run lives.
  """
  config: ml_collections.ConfigDict
  model: Any
  params: Any
  norm: poses.Normalization
  step: int
  workdir: str

  @property
  def joint_names(self) -> tuple[str, ...]:
    return joints.names(self.config.model.num_joints)

  @property
  def parents(self) -> tuple[int, ...]:
    return joints.parents(self.config.model.num_joints)


def load_run(workdir: str, step: Optional[int] = None, best: bool = False) -> Run:
  """Restores the model of a training workdir (parameters only, no optimiser state).

  Args:
    workdir: a directory `python -m rpsm_jax.main` trained into.
    step: checkpoint step to load; None = the latest (or the best when `best`).
    best: load the checkpoint with the lowest evaluation MPJPE.
  """
  config = workdir_lib.load_config(workdir)
  norm = workdir_lib.load_normalization(workdir)
  model = model_factory.create_model(config.model)
  frames = poses.dummy_frames(config.clip_length, config.model.input_size)
  # Only shapes are built here: no initialisation is computed.
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), frames))["params"]
  step, directory = checkpoints.find(workdir, step, best=best)
  params = workdir_lib.restore_params(directory, abstract)
  return Run(config, model, params, norm, step, workdir)
