"""What predict, streaming and export share: a trained run restored, crops, the forward pass.

A run's workdir holds config.json (the config it trained with), normalization.json (the
training statistics that un-normalise predictions) and Orbax checkpoints. `load_run` turns
it back into a model, its parameters and its statistics, without the dataset.
"""

import dataclasses
import logging as logging_lib
import os
from typing import Any, Optional

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rpsm_jax import checkpoints
from rpsm_jax import input_pipeline
from rpsm_jax import joints
from rpsm_jax import models
from rpsm_jax import optim
from rpsm_jax import train


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
  norm: input_pipeline.Normalization
  step: int
  workdir: str

  @property
  def joint_names(self) -> tuple[str, ...]:
    return joint_names(self.config.model.num_joints)

  @property
  def parents(self) -> tuple[int, ...]:
    return joint_parents(self.config.model.num_joints)


def joint_names(num_joints: int) -> tuple[str, ...]:
  """The joint layout of a model with `num_joints` outputs (Human3.6M 17 or HumanEva 14)."""
  layouts = {len(joints.H36M_JOINTS): joints.H36M_JOINTS,
             len(joints.HUMANEVA_JOINTS): joints.HUMANEVA_JOINTS}
  if num_joints in layouts:
    return layouts[num_joints]
  return tuple(f"joint_{i}" for i in range(num_joints))


def joint_parents(num_joints: int) -> tuple[int, ...]:
  layouts = {len(joints.H36M_PARENTS): joints.H36M_PARENTS,
             len(joints.HUMANEVA_PARENTS): joints.HUMANEVA_PARENTS}
  return layouts.get(num_joints, (-1,) * num_joints)


def load_run(workdir: str, step: Optional[int] = None, best: bool = False) -> Run:
  """Restores the model of a training workdir.

  Args:
    workdir: a directory `python -m rpsm_jax.main` trained into.
    step: checkpoint step to load; None = the latest (or the best when `best`).
    best: load from <workdir>/best (lowest evaluation MPJPE) instead of checkpoints/.
  """
  config = train.load_config(workdir)
  norm_path = os.path.join(workdir, "normalization.json")
  if not os.path.exists(norm_path):
    raise FileNotFoundError(f"{norm_path} is missing: is {workdir} a training workdir?")
  norm = input_pipeline.Normalization.load(norm_path)
  ckpt_dir = os.path.join(workdir, "best" if best else "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"{ckpt_dir} is missing: {workdir} holds no checkpoint yet")
  model = models.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
  # The whole TrainState is restored (what was saved); only the shapes are built here, so no
  # initialisation is computed.
  abstract = jax.eval_shape(lambda: train.create_train_state(config, model, tx,
                                                             jax.random.key(0)))
  manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  try:
    state = manager.restore(abstract, step, best=best)
  finally:
    manager.close()
  return Run(config, model, state.params, norm, int(state.step), workdir)


def denormalize_root_relative(poses, norm: input_pipeline.Normalization):
  """Normalised (..., P, 3) -> mm with the root joint exactly at 0 (numpy or jax).

  The model also regresses the root's normalised coordinate; un-normalised it is a few mm
  off zero, so the root is subtracted again to make outputs strictly root-relative.
  """
  return input_pipeline.root_relative(norm.denormalize(poses), norm.root_joint)


def make_forward_mm(model, norm: input_pipeline.Normalization):
  """f(params, frames uint8 (B, T, S, S, 3)) -> (K, B, T, P, 3) float32 root-relative mm.

  Non-streaming: the LSTM starts every clip from zero state, as evaluation does.
  """
  def forward(params, frames):
    poses = model.apply({"params": params}, input_pipeline.model_input(frames))
    return denormalize_root_relative(poses, norm)
  return forward


def zero_carries(model, params, batch: int, input_size: int):
  """Per-stage LSTM states of a fresh stream, as the model returns them (None for dense)."""
  frames = jax.ShapeDtypeStruct((batch, 1, input_size, input_size, 3), jnp.float32)
  _, carries = jax.eval_shape(
      lambda p, x: model.apply({"params": p}, x, return_carries=True), params, frames)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), carries)


class _QuietLibraries(logging_lib.Filter):
  """Drops INFO chatter of Orbax (tens of lines per restore); keeps its warnings."""

  def filter(self, record):
    return record.levelno >= logging_lib.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  """For command lines: hides Orbax's INFO lines from the log handlers."""
  for handler in logging_lib.getLogger().handlers:
    handler.addFilter(_QuietLibraries())


# --------------------------------------------------------------------------- crops


def square_box(box) -> np.ndarray:
  """The authors' crop: a box's short side grown to a square about its centre, no margin.

  Args:
    box: [x0, y0, x1, y1] pixels (edge convention: pixel j spans [j, j + 1]).

  Returns:
    (4,) float64 square [x0, y0, x1, y1], possibly reaching outside the image.
  """
  box = np.asarray(box, np.float64)
  centre = 0.5 * (box[:2] + box[2:])
  half = 0.5 * max(box[2] - box[0], box[3] - box[1])
  return np.concatenate([centre - half, centre + half])


def centre_box(height: int, width: int) -> np.ndarray:
  """The largest square centred in an image: the crop used when no person box is given."""
  side = min(height, width)
  x0, y0 = (width - side) / 2, (height - side) / 2
  return np.array([x0, y0, x0 + side, y0 + side], np.float64)


def crop_and_resize(image: np.ndarray, square: np.ndarray, size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Cuts a square out of an image, zero-padded outside it, and resizes it to size x size.

  The square is rounded to whole pixels (at most half a pixel off) so the cut is exact and
  the resize is the same one the training pipeline applies to its stored crops.

  Args:
    image: (H, W, 3) uint8.
    square: [x0, y0, x1, y1] pixels, x1 - x0 == y1 - y0 (see `square_box`).
    size: model input side.

  Returns:
    (size, size, 3) uint8 crop and the (4,) int box actually cut.
  """
  x0, y0 = int(np.floor(square[0] + 0.5)), int(np.floor(square[1] + 0.5))
  side = max(1, int(np.floor(square[2] - square[0] + 0.5)))
  h, w = image.shape[:2]
  out = np.zeros((side, side, 3), np.uint8)
  sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
  if sx1 > sx0 and sy1 > sy0:
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
  if side != size:
    interp = cv2.INTER_CUBIC if size > side else cv2.INTER_AREA
    out = cv2.resize(out, (size, size), interpolation=interp)
  return out, np.array([x0, y0, x0 + side, y0 + side], np.int64)
