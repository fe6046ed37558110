"""The contract between data, model and outputs: pose coordinates and the model's input.

Poses are (..., P, 3) arrays, P joints in rpsm_jax.joints order. The model sees frames as
`model_input(uint8)` and predicts max-min normalised root-relative poses (`Normalization`);
everything a user reads is root-relative mm (`make_forward_mm`). Numpy and jax alike.
"""

import dataclasses
import operator

import jax
import jax.numpy as jnp
import numpy as np


def root_relative(pose_3d, root_joint: int):
  """(..., P, 3) -> the same with joint `root_joint` subtracted (numpy or jax)."""
  num_joints = pose_3d.shape[-2]
  root = operator.index(root_joint)
  if not -num_joints <= root < num_joints:
    raise ValueError(f"root must index one of {num_joints} joints, got {root}.")
  return pose_3d - pose_3d[..., root, None, :]


def _parent_first_order(parents) -> list[int]:
  """Joint indices ordered so that every joint comes after its parent."""
  order, placed = [], set()
  while len(order) < len(parents):
    ready = [j for j, q in enumerate(parents)
             if j not in placed and (q < 0 or q in placed)]
    if not ready:
      raise ValueError(f"joint parents {tuple(parents)} contain a cycle")
    order += ready
    placed.update(ready)
  return order


def bone_lengths(pose_3d: np.ndarray, parents) -> np.ndarray:
  """(..., P, 3) mm -> (..., P) length of each joint's bone to its parent (0 at roots)."""
  parents = np.asarray(parents)
  has_parent = parents >= 0
  bones = pose_3d - pose_3d[..., np.where(has_parent, parents, np.arange(len(parents))), :]
  return np.linalg.norm(bones, axis=-1)


def rescale_bones(pose_3d: np.ndarray, parents, lengths: np.ndarray) -> np.ndarray:
  """Every bone of (..., P, 3) poses set to lengths (P,) mm, its direction kept.

  `lengths` may also be (..., P), one set per pose (e.g. each frame's true lengths).

  Walks the skeleton from its roots, which stay in place: the authors' code fits every
  training label to the training set's mean bone lengths this way, so the targets do not
  carry each subject's proportions (RPSM_REFERENCE.md, 3D labels).
  """
  out = np.array(pose_3d, np.float64, copy=True)
  lengths = np.asarray(lengths)
  for j in _parent_first_order(parents):
    q = parents[j]
    if q < 0:
      continue
    bone = pose_3d[..., j, :] - pose_3d[..., q, :]
    norm = np.linalg.norm(bone, axis=-1, keepdims=True)
    out[..., j, :] = out[..., q, :] + bone / np.maximum(norm, 1e-6) * lengths[..., j, None]
  return out.astype(np.asarray(pose_3d).dtype)


# The authors feed RGB in [0, 1] minus 0.5: input = uint8 * INPUT_SCALE + INPUT_OFFSET.
INPUT_SCALE = 1.0 / 255.0
INPUT_OFFSET = -0.5


def model_input(image):
  """uint8 (..., H, W, 3) numpy or jax -> float32 model input (INPUT_SCALE, INPUT_OFFSET)."""
  return image.astype(np.float32) * INPUT_SCALE + INPUT_OFFSET


def dummy_frames(clip_length: int, input_size: int, batch: int = 1):
  """The zero input (batch, T, S, S, 3) float32 that initialises or traces the model."""
  return jnp.zeros((batch, clip_length, input_size, input_size, 3), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Normalization:
  """Per-coordinate max-min normalisation of root-relative poses (P, 3), in mm.

  x_norm = (x - minimum) / (maximum - minimum); the range is floored at 1 mm so the root
  (always 0) does not divide by zero.
  """
  minimum: np.ndarray
  maximum: np.ndarray
  mean_pose: np.ndarray
  root_joint: int

  @classmethod
  def from_poses(cls, pose_3d_mm: np.ndarray, root_joint: int) -> "Normalization":
    rel = root_relative(pose_3d_mm, root_joint)
    return cls(rel.min(0), rel.max(0), rel.mean(0), root_joint)

  @property
  def scale(self):
    return np.maximum(self.maximum - self.minimum, 1.0).astype(np.float32)

  def normalize(self, rel_mm):
    return (rel_mm - self.minimum) / self.scale

  def denormalize(self, x):
    """Normalised (..., P, 3) -> root-relative mm; numpy or jax alike."""
    return x * self.scale + self.minimum.astype(np.float32)

  def to_json(self) -> dict:
    return {"minimum": self.minimum.tolist(), "maximum": self.maximum.tolist(),
            "mean_pose": self.mean_pose.tolist(), "root_joint": self.root_joint}

  @classmethod
  def from_json(cls, d: dict) -> "Normalization":
    return cls(*(np.asarray(d[k], np.float32) for k in ("minimum", "maximum", "mean_pose")),
               int(d["root_joint"]))


def denormalize_root_relative(poses, norm: Normalization):
  """Normalised (..., P, 3) -> mm with the root joint exactly at 0 (numpy or jax).

  The model also regresses the root's normalised coordinate; un-normalised it is a few mm
  off zero, so the root is subtracted again to make outputs strictly root-relative.
  """
  return root_relative(norm.denormalize(poses), norm.root_joint)


def make_forward_mm(model, norm: Normalization):
  """f(params, frames uint8 (B, T, S, S, 3)) -> (K, B, T, P, 3) float32 root-relative mm.

  Non-streaming: the LSTM starts every clip from zero state, as evaluation does.
  """
  def forward(params, frames):
    poses = model.apply({"params": params}, model_input(frames))
    return denormalize_root_relative(poses, norm)
  return forward


def zero_carries(model, params, batch: int, input_size: int):
  """Per-stage LSTM states of a fresh stream, as the model returns them (None for dense)."""
  frames = jax.ShapeDtypeStruct((batch, 1, input_size, input_size, 3), jnp.float32)
  _, carries = jax.eval_shape(
      lambda p, x: model.apply({"params": p}, x, return_carries=True), params, frames)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), carries)
