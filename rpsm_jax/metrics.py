"""3D pose errors: MPJPE (Protocol #1), P-MPJPE (#2), N-MPJPE and MPJVE.

Also two splits of the error (numpy only): over a clip's frames (`clip_error_split`) and
into bone lengths and bone directions (`bone_length_split`).

Poses are shaped (..., P, 3); errors come out in the inputs' units (mm in this
project; MPJVE in mm per frame). Every metric accepts numpy or jax arrays:
numpy in gives numpy (float64) out, jax in (any argument a jax array) gives jax
out and works inside `jax.jit`, with `root` and `reduce` static.

Each metric first computes one error per pose, shape (...), the mean over
joints of the Euclidean joint distance. With `reduce=True` (default) that is
averaged over all poses, i.e. frame-wise averaging over every leading axis, as
the RPSM authors average. With `reduce=False` the per-pose errors are returned
so callers can average per action, per subject, etc.

`mask`, broadcastable to the leading shape (...), marks valid poses (bool or
0/1): the reduced mean covers valid poses only (NaN if there are none), and
with `reduce=False` invalid poses come back as NaN so they cannot be averaged
in by mistake. Values in invalid poses never leak into the result, even NaN.
"""

import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rpsm_jax import poses

Array = Any  # np.ndarray or jax.Array (or anything np.asarray accepts).


def _namespace(*arrays):
  """jnp if any argument is a jax array (tracers included), else np."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _as_float(xp, x):
  if xp is np:
    return np.asarray(x, dtype=np.float64)
  x = jnp.asarray(x)
  # Ints and half precision go to float32 at least; float64 stays (x64 mode).
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _prepare(pred, target, mask):
  """Checks shapes; returns (xp, pred, target, mask) as float / bool arrays.

  The mask comes back broadcast to the leading shape (...) (or None), and
  invalid poses are zeroed so padding (even NaN) cannot break an SVD or leak
  into a mean.
  """
  xp = _namespace(pred, target, mask)
  pred, target = _as_float(xp, pred), _as_float(xp, target)
  if pred.ndim < 2 or pred.shape[-1] != 3:
    raise ValueError(f"pred must be shaped (..., P, 3), got {pred.shape}.")
  if target.shape != pred.shape:
    raise ValueError(
        f"target must have the shape of pred {pred.shape}, got {target.shape}.")
  if mask is not None:
    mask = _as_mask(xp, mask, pred.shape[:-2])
    pred = xp.where(mask[..., None, None], pred, 0.0)
    target = xp.where(mask[..., None, None], target, 0.0)
  return xp, pred, target, mask


def _as_mask(xp, mask, shape):
  """Boolean mask broadcast to `shape` (the poses' leading shape)."""
  mask = xp.asarray(mask)
  try:
    ok = np.broadcast_shapes(mask.shape, shape) == tuple(shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
        f"mask must be broadcastable to the poses' leading shape "
        f"{tuple(shape)}, got {mask.shape}.")
  return xp.broadcast_to(mask.astype(bool), shape)


def _root_relative(x, root):
  """Subtracts joint `root` from every joint of x (..., P, 3)."""
  num_joints = x.shape[-2]
  root = operator.index(root)
  if not -num_joints <= root < num_joints:
    raise ValueError(f"root must index one of {num_joints} joints, got {root}.")
  return x - x[..., root, None, :]


def _pose_error(xp, pred, target):
  """Mean over joints of the Euclidean distance: (..., P, 3) -> (...)."""
  return xp.mean(xp.linalg.norm(pred - target, axis=-1), axis=-1)


def _reduce(xp, err, mask, reduce):
  """Mean of per-pose errors err (...) over valid poses, or err itself.

  mask: None or a bool array of err's shape.
  """
  if mask is None:
    return xp.mean(err) if reduce else err
  if not reduce:
    return xp.where(mask, err, xp.nan)
  total = xp.sum(xp.where(mask, err, 0.0))
  count = xp.sum(mask)
  return xp.where(count > 0, total / xp.maximum(count, 1), xp.nan)[()]


def _safe_divide(xp, num, den):
  # A degenerate pose (all joints at one point) gets scale 0, the limit of the
  # least-squares fit, rather than NaN.
  return num / xp.where(den > 0, den, 1.0)


def mpjpe(pred: Array, target: Array, root: int | None = None,
          mask: Array | None = None, reduce: bool = True) -> Array:
  """Mean per-joint position error, Protocol #1.

  Args:
    pred: (..., P, 3) predicted joint positions, e.g. (B, T, P, 3) in mm.
    target: (..., P, 3) ground truth, same shape and units.
    root: joint index; if given both poses are made relative to this joint
      first ("up to translation"). None (default) compares them as they are,
      for inputs that are already root-relative.
    mask: optional (...) valid-pose mask, see the module docstring.
    reduce: True for the mean over all (valid) poses, a scalar; False for the
      per-pose errors, shape (...).

  Returns:
    The error in the units of the inputs: a scalar, or (...) if not `reduce`.
  """
  xp, pred, target, mask = _prepare(pred, target, mask)
  if root is not None:
    pred, target = _root_relative(pred, root), _root_relative(target, root)
  return _reduce(xp, _pose_error(xp, pred, target), mask, reduce)


def procrustes_align(pred: Array, target: Array) -> Array:
  """Aligns each pose of pred to target by a similarity transform.

  Per pose, finds the rotation R (a proper one: reflections are excluded),
  uniform scale s and translation t minimising ||s * pred @ R + t - target||^2
  (Umeyama 1991), and returns s * pred @ R + t.

  Args:
    pred: (..., P, 3) poses to align.
    target: (..., P, 3) poses to align to.

  Returns:
    (..., P, 3) aligned pred, in the units of target.
  """
  xp, pred, target, _ = _prepare(pred, target, None)
  mu_pred = xp.mean(pred, axis=-2, keepdims=True)
  mu_target = xp.mean(target, axis=-2, keepdims=True)
  pred0, target0 = pred - mu_pred, target - mu_target
  # Row vectors: maximise tr(R^T H) with H = pred0^T target0, so R = U V^T.
  h = xp.swapaxes(pred0, -1, -2) @ target0
  u, sigma, vt = xp.linalg.svd(h)
  # If U V^T is a reflection, flip the axis of the smallest singular value:
  # the best proper rotation (det(U) det(V) = det(U V^T) = +-1).
  d = xp.sign(xp.linalg.det(u @ vt))
  ones = xp.ones_like(d)
  flip = xp.stack([ones, ones, d], axis=-1)  # (..., 3)
  rot = (u * flip[..., None, :]) @ vt
  scale = _safe_divide(xp, xp.sum(sigma * flip, axis=-1),
                       xp.sum(pred0**2, axis=(-2, -1)))
  return scale[..., None, None] * (pred0 @ rot) + mu_target


def p_mpjpe(pred: Array, target: Array, mask: Array | None = None,
            reduce: bool = True) -> Array:
  """MPJPE after per-pose Procrustes alignment, Protocol #2.

  Each pose of pred is aligned to its target by rotation (reflections
  excluded), uniform scale and translation (see `procrustes_align`); no root
  argument because the translation is removed anyway.

  Args:
    pred: (..., P, 3) predicted joint positions, e.g. mm.
    target: (..., P, 3) ground truth, same shape and units.
    mask: optional (...) valid-pose mask, see the module docstring.
    reduce: True for the mean over all (valid) poses; False for (...) errors.

  Returns:
    The error in the units of the inputs: a scalar, or (...) if not `reduce`.
  """
  xp, pred, target, mask = _prepare(pred, target, mask)
  aligned = procrustes_align(pred, target)
  return _reduce(xp, _pose_error(xp, aligned, target), mask, reduce)


def n_mpjpe(pred: Array, target: Array, root: int | None = None,
            mask: Array | None = None, reduce: bool = True) -> Array:
  """MPJPE after per-pose scale-only alignment (Rhodin et al. 2018).

  Each pose of pred is multiplied by the least-squares scale
  s = <pred, target> / <pred, pred> (sums over joints and coordinates). As in
  VideoPose3D's `n_mpjpe`, the poses are NOT centred on their mean first: the
  scale acts about the origin, so inputs should be root-relative, or pass
  `root` to make them so.

  Args:
    pred: (..., P, 3) predicted joint positions, e.g. mm.
    target: (..., P, 3) ground truth, same shape and units.
    root: joint index; if given both poses are made relative to it before
      scaling. None (default) for inputs that are already root-relative.
    mask: optional (...) valid-pose mask, see the module docstring.
    reduce: True for the mean over all (valid) poses; False for (...) errors.

  Returns:
    The error in the units of the inputs: a scalar, or (...) if not `reduce`.
  """
  xp, pred, target, mask = _prepare(pred, target, mask)
  if root is not None:
    pred, target = _root_relative(pred, root), _root_relative(target, root)
  scale = _safe_divide(xp, xp.sum(pred * target, axis=(-2, -1)),
                       xp.sum(pred**2, axis=(-2, -1)))
  err = _pose_error(xp, scale[..., None, None] * pred, target)
  return _reduce(xp, err, mask, reduce)


def mpjve(pred: Array, target: Array, root: int | None = None,
          mask: Array | None = None, reduce: bool = True) -> Array:
  """Mean per-joint velocity error: MPJPE of first differences over time.

  Velocities are x[..., t + 1, :, :] - x[..., t, :, :] along axis -3, so the
  error is in input units per frame (mm/frame), and there are T - 1 of them.

  Args:
    pred: (..., T, P, 3) predicted joint positions, T >= 2, e.g. mm.
    target: (..., T, P, 3) ground truth, same shape and units.
    root: joint index; if given velocities are of root-relative positions.
      None (default) compares the positions as they are.
    mask: optional (..., T) valid-frame mask (broadcastable); a velocity is
      valid only if both of its frames are.
    reduce: True for the mean over all (valid) velocities; False for the
      per-velocity errors, shape (..., T - 1).

  Returns:
    The error in input units per frame: a scalar, or (..., T - 1).
  """
  xp, pred, target, mask = _prepare(pred, target, mask)
  if pred.ndim < 3 or pred.shape[-3] < 2:
    raise ValueError(
        f"pred and target must be shaped (..., T, P, 3) with T >= 2 frames "
        f"for velocities, got {pred.shape}.")
  if root is not None:
    pred, target = _root_relative(pred, root), _root_relative(target, root)
  if mask is not None:
    mask = mask[..., 1:] & mask[..., :-1]
  err = _pose_error(xp, xp.diff(pred, axis=-3), xp.diff(target, axis=-3))
  return _reduce(xp, err, mask, reduce)


def clip_error_split(pred: Array, target: Array, root: int | None = None) -> tuple:
  """Splits each clip's pose errors into the part shared by all its frames and the rest.

  With e_t = pred_t - target_t (root-relative when `root` is given) and e_bar its mean
  over the clip's frames, the per-pose errors of e_bar ("clip-constant": offsets that
  last the whole clip, such as a wrong bone length or a global tilt) and of e_t - e_bar
  ("frame-to-frame"). Their squared norms add up to e_t's (per joint, summed over a clip),
  and only the frame-to-frame part can be removed by smoothing over the clip's frames.

  Args:
    pred: (..., T, P, 3) predicted joint positions of whole clips, e.g. mm.
    target: (..., T, P, 3) ground truth, same shape and units.
    root: joint index, as in mpjpe.

  Returns:
    (clip_constant, frame_to_frame), each (..., T): mean over joints of the Euclidean
    norms, in input units.
  """
  xp, pred, target, _ = _prepare(pred, target, None)
  if pred.ndim < 3:
    raise ValueError(f"pred and target must be shaped (..., T, P, 3), got {pred.shape}.")
  if root is not None:
    pred, target = _root_relative(pred, root), _root_relative(target, root)
  error = pred - target
  constant = xp.broadcast_to(xp.mean(error, axis=-3, keepdims=True), error.shape)
  zeros = xp.zeros_like(error)
  return _pose_error(xp, constant, zeros), _pose_error(xp, error - constant, zeros)


def bone_length_split(pred: np.ndarray, target: np.ndarray, parents,
                      root: int | None = None) -> tuple:
  """Separates wrong bone lengths (the body's proportions) from wrong bone directions.

  Args:
    pred: (..., P, 3) predicted joint positions, e.g. mm (numpy).
    target: (..., P, 3) ground truth, same shape and units.
    parents: (P,) each joint's parent index, -1 at the root (rpsm_jax.joints.parents).
    root: joint index, as in mpjpe.

  Returns:
    (bone_length_error, true_length_mpjpe), each (...): the mean over bones of
    |predicted length - true length|, and the pose error (as mpjpe) of the prediction
    once every bone is given its true length with its predicted direction kept: what
    the directions alone cost. MPJPE minus the latter is about what wrong proportions
    cost (the two parts do not add exactly).
  """
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  if pred.shape != target.shape or pred.shape[-2:] != (len(parents), 3):
    raise ValueError(f"pred and target must both be (..., {len(parents)}, 3), "
                     f"got {pred.shape} and {target.shape}.")
  has_bone = np.asarray(parents) >= 0
  true_lengths = poses.bone_lengths(target, parents)
  length_error = np.abs(poses.bone_lengths(pred, parents) - true_lengths)
  directions_only = poses.rescale_bones(pred, parents, true_lengths)
  return (length_error[..., has_bone].mean(-1),
          mpjpe(directions_only, target, root=root, reduce=False))
