"""Tests of rpsm_jax.metrics: hand-made cases and independent formulas."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpsm_jax import joints
from rpsm_jax import metrics
from rpsm_jax import poses

METRICS = (metrics.mpjpe, metrics.p_mpjpe, metrics.n_mpjpe, metrics.mpjve)


def _poses(seed, shape=(2, 4, 17), scale=300.0):
  """Random non-planar poses (..., P, 3) of human size, in mm."""
  return np.random.default_rng(seed).normal(scale=scale, size=shape + (3,))


def _rotation(seed):
  """A random proper rotation (det +1), column-vector convention."""
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


def _umeyama_error(pred, target, allow_reflection=False):
  """Reference P-MPJPE of one pose (P, 3), written from Umeyama (1991).

  Column vectors x_i (pred) and y_i (target): Sigma = cov(y, x) = U D V^T,
  S = diag(1, 1, -1) if det(U) det(V) < 0 else I, R = U S V^T,
  c = tr(D S) / var(x), t = mu_y - c R mu_x.
  """
  x, y = pred.T, target.T  # (3, P)
  mu_x = x.mean(axis=1, keepdims=True)
  mu_y = y.mean(axis=1, keepdims=True)
  xc, yc = x - mu_x, y - mu_y
  n = x.shape[1]
  sigma = yc @ xc.T / n
  u, d, vt = np.linalg.svd(sigma)
  s = np.eye(3)
  if not allow_reflection and np.linalg.det(u) * np.linalg.det(vt) < 0:
    s[2, 2] = -1.0
  r = u @ s @ vt
  var_x = np.sum(xc**2) / n
  c = np.trace(np.diag(d) @ s) / var_x
  t = mu_y - c * r @ mu_x
  aligned = c * r @ x + t
  return np.mean(np.sqrt(np.sum((aligned - y)**2, axis=0)))


# --- MPJPE ---------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_identical_poses_score_zero(metric):
  pose = _poses(0)
  assert metric(pose, pose) == pytest.approx(0.0, abs=1e-9)


def test_mpjpe_hand_computed():
  # Frame 0: joint errors 0 and 5 -> 2.5. Frame 1: joint errors 1 and 2 -> 1.5.
  target = np.zeros((2, 2, 3))
  pred = np.array([[[0., 0., 0.], [3., 4., 0.]],
                   [[0., 1., 0.], [0., 0., -2.]]])
  np.testing.assert_allclose(
      metrics.mpjpe(pred, target, reduce=False), [2.5, 1.5])
  assert metrics.mpjpe(pred, target) == pytest.approx(2.0)


def test_mpjpe_root_alignment_hand_computed():
  target = np.zeros((3, 3))
  pred = np.array([[1., 0., 0.], [1., 3., 4.], [1., 0., 0.]])
  # Relative to joint 0 (or 2) pred is [[0, 0, 0], [0, 3, 4], [0, 0, 0]]:
  # errors 0, 5, 0. Relative to joint 1 the errors are 5, 0, 5.
  assert metrics.mpjpe(pred, target, root=0) == pytest.approx(5 / 3)
  assert metrics.mpjpe(pred, target, root=-1) == pytest.approx(5 / 3)
  assert metrics.mpjpe(pred, target, root=1) == pytest.approx(10 / 3)
  assert metrics.mpjpe(pred, target) == pytest.approx((2 + np.sqrt(26)) / 3)


def test_translation_zero_with_root_and_its_norm_without():
  target = _poses(1)
  offset = np.array([30., -40., 120.])  # norm 130
  pred = target + offset
  assert metrics.mpjpe(pred, target, root=0) == pytest.approx(0.0, abs=1e-9)
  assert metrics.mpjpe(pred, target) == pytest.approx(130.0)
  np.testing.assert_allclose(metrics.mpjpe(pred, target, reduce=False),
                             np.full((2, 4), 130.0))


# --- P-MPJPE -------------------------------------------------------------


def test_similarity_transform_scores_zero_under_p_mpjpe_only():
  target = _poses(2)
  pred = 1.3 * target @ _rotation(3).T + np.array([100., -50., 2000.])
  assert metrics.p_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-8)
  assert metrics.mpjpe(pred, target) > 100.0
  assert metrics.mpjpe(pred, target, root=0) > 100.0


def test_p_mpjpe_excludes_reflections():
  target = _poses(4, shape=(3, 17))
  pred = target * np.array([-1., 1., 1.])  # mirror image
  errors = metrics.p_mpjpe(pred, target, reduce=False)
  # A similarity transform with reflection would fit exactly ...
  for p, t in zip(pred, target):
    assert _umeyama_error(p, t, allow_reflection=True) < 1e-8
  # ... but a proper rotation cannot.
  assert np.all(errors > 50.0)
  expected = [_umeyama_error(p, t) for p, t in zip(pred, target)]
  np.testing.assert_allclose(errors, expected, rtol=1e-9)


def test_p_mpjpe_matches_independent_umeyama():
  rng = np.random.default_rng(5)
  target = _poses(6, shape=(2, 5, 17))
  pred = target + rng.normal(scale=60.0, size=target.shape)
  pred[0] = pred[0] @ _rotation(7).T * 0.8 + 40.0
  # Near-mirrored frames, so the reflection branch is exercised too.
  pred[1, :2] = pred[1, :2] * np.array([1., -1., 1.])
  errors = metrics.p_mpjpe(pred, target, reduce=False)
  expected = np.array([[_umeyama_error(p, t) for p, t in zip(ps, ts)]
                       for ps, ts in zip(pred, target)])
  assert errors.shape == (2, 5)
  np.testing.assert_allclose(errors, expected, rtol=1e-9)
  assert metrics.p_mpjpe(pred, target) == pytest.approx(expected.mean())
  assert np.all(errors < metrics.mpjpe(pred, target, reduce=False))


def test_p_mpjpe_degenerate_pose_is_finite():
  target = _poses(8, shape=(17,))
  pred = np.zeros_like(target)  # all joints at one point: scale 0 fits best
  expected = np.mean(np.linalg.norm(target - target.mean(0), axis=-1))
  assert metrics.p_mpjpe(pred, target) == pytest.approx(expected)


# --- N-MPJPE -------------------------------------------------------------


def test_scaled_pose_scores_zero_under_n_mpjpe():
  target = _poses(9)
  pred = 0.7 * target
  assert metrics.n_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-9)
  assert metrics.mpjpe(pred, target) > 10.0


def test_n_mpjpe_matches_least_squares_scale():
  rng = np.random.default_rng(10)
  target = _poses(11, shape=(3, 17))
  pred = 1.2 * target + rng.normal(scale=40.0, size=target.shape)
  expected = []
  for p, t in zip(pred, target):
    s = np.linalg.lstsq(p.reshape(-1, 1), t.reshape(-1), rcond=None)[0]
    expected.append(np.mean(np.linalg.norm(s * p - t, axis=-1)))
  np.testing.assert_allclose(
      metrics.n_mpjpe(pred, target, reduce=False), expected, rtol=1e-9)


def test_n_mpjpe_does_not_centre_unless_root_given():
  target = _poses(12, shape=(17,))
  pred = 0.5 * (target + np.array([200., 0., 0.]))
  assert metrics.n_mpjpe(pred, target) > 10.0
  assert metrics.n_mpjpe(pred, target, root=0) == pytest.approx(0.0, abs=1e-9)


# --- MPJVE ---------------------------------------------------------------


def test_mpjve_constant_offset_is_zero():
  target = _poses(13, shape=(2, 6, 17))
  pred = target + _poses(14, shape=(2, 1, 17))  # per-joint, constant in time
  assert metrics.mpjve(pred, target) == pytest.approx(0.0, abs=1e-9)
  assert metrics.mpjpe(pred, target) > 10.0


def test_mpjve_linear_drift():
  target = _poses(15, shape=(6, 2))
  # Joint 0 drifts 5 mm/frame, joint 1 13 mm/frame: velocity error 9 mm/frame.
  drift = np.array([[3., 4., 0.], [5., 0., 12.]])
  pred = target + np.arange(6)[:, None, None] * drift
  errors = metrics.mpjve(pred, target, reduce=False)
  np.testing.assert_allclose(errors, np.full(5, 9.0))
  assert metrics.mpjve(pred, target) == pytest.approx(9.0)
  # Against the definition: MPJPE of first differences.
  assert metrics.mpjve(pred, target) == pytest.approx(
      metrics.mpjpe(np.diff(pred, axis=0), np.diff(target, axis=0)))


# --- Masks ---------------------------------------------------------------


@pytest.mark.parametrize("metric", (metrics.mpjpe, metrics.p_mpjpe,
                                    metrics.n_mpjpe))
def test_mask_excludes_poses(metric):
  target = _poses(16)
  pred = target + _poses(17, scale=50.0)
  mask = np.ones((2, 4), bool)
  mask[1, 2:] = False
  pred_garbage = pred.copy()
  pred_garbage[1, 2:] = np.nan  # padding must not leak into the mean
  expected = metric(pred[mask], target[mask])
  assert metric(pred_garbage, target, mask=mask) == pytest.approx(expected)
  assert metric(pred, target, mask=mask) != pytest.approx(metric(pred, target))
  per_pose = metric(pred_garbage, target, mask=mask, reduce=False)
  assert np.all(np.isnan(per_pose[1, 2:]))
  np.testing.assert_allclose(per_pose[mask], metric(pred, target,
                                                    reduce=False)[mask])


def test_mask_broadcasts_and_all_invalid_gives_nan():
  target = _poses(18)
  pred = target + 1.0
  per_clip = np.array([[True], [False]])  # (2, 1) broadcasts over frames
  assert metrics.mpjpe(pred, target, mask=per_clip) == pytest.approx(
      metrics.mpjpe(pred[0], target[0]))
  assert np.isnan(metrics.mpjpe(pred, target, mask=np.zeros((2, 4))))


def test_mpjve_velocity_needs_both_frames_valid():
  target = _poses(19, shape=(4, 17))
  pred = target + np.arange(4)[:, None, None] * np.array([0., 0., 7.])
  pred[2] = 1e6  # only velocity 0 -> 1 has both frames valid
  mask = np.array([True, True, False, True])
  assert metrics.mpjve(pred, target, mask=mask) == pytest.approx(7.0)
  errors = metrics.mpjve(pred, target, mask=mask, reduce=False)
  assert errors[0] == pytest.approx(7.0)
  assert np.all(np.isnan(errors[1:]))


# --- numpy / jax ---------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("reduce", (True, False))
def test_numpy_and_jax_agree(metric, reduce):
  target = _poses(20)
  pred = 1.1 * target + _poses(21, scale=40.0)
  mask = np.array([[True, True, False, True], [True, True, True, True]])
  out_np = metric(pred, target, mask=mask, reduce=reduce)
  out_jax = metric(jnp.asarray(pred, jnp.float32), jnp.asarray(target,
                                                               jnp.float32),
                   mask=jnp.asarray(mask), reduce=reduce)
  assert not isinstance(out_np, jax.Array)
  assert np.asarray(out_np).dtype == np.float64
  assert isinstance(out_jax, jax.Array)
  assert out_jax.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out_jax), out_np, rtol=1e-5,
                             equal_nan=True)


def test_jit():
  target = _poses(22)
  pred = 1.1 * target @ _rotation(23).T + _poses(24, scale=40.0)
  mask = np.array([[True, False, True, True], [True, True, True, False]])
  pred_j, target_j = jnp.asarray(pred), jnp.asarray(target)
  for metric, kwargs in ((metrics.mpjpe, dict(root=0)),
                         (metrics.p_mpjpe, {}),
                         (metrics.n_mpjpe, dict(root=0)),
                         (metrics.mpjve, {})):
    fn = jax.jit(functools.partial(metric, **kwargs))
    out = fn(pred_j, target_j, mask=jnp.asarray(mask))
    expected = metric(pred, target, mask=mask, **kwargs)
    assert expected > 1.0
    np.testing.assert_allclose(float(out), expected, rtol=1e-5)
  per_frame = jax.jit(functools.partial(metrics.p_mpjpe, reduce=False))(
      pred_j, target_j)
  assert per_frame.shape == (2, 4)


# --- Errors --------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_shape_errors(metric):
  good = np.zeros((2, 4, 17, 3))
  with pytest.raises(ValueError, match="target"):
    metric(good, np.zeros((2, 4, 16, 3)))
  with pytest.raises(ValueError, match="pred"):
    metric(np.zeros((2, 4, 17, 2)), np.zeros((2, 4, 17, 2)))
  with pytest.raises(ValueError, match="mask"):
    metric(good, good, mask=np.ones(3, bool))


def test_mpjve_needs_two_frames():
  with pytest.raises(ValueError, match="T >= 2"):
    metrics.mpjve(np.zeros((1, 17, 3)), np.zeros((1, 17, 3)))
  with pytest.raises(ValueError, match="T >= 2"):
    metrics.mpjve(np.zeros((17, 3)), np.zeros((17, 3)))


def test_root_out_of_range():
  with pytest.raises(ValueError, match="root"):
    metrics.mpjpe(np.zeros((17, 3)), np.zeros((17, 3)), root=17)


def test_clip_error_split_separates_a_lasting_offset_from_jitter():
  rng = np.random.default_rng(0)
  target = rng.normal(size=(3, 4, 5, 3)) * 100
  offset = np.array([0.0, 0.0, 30.0])                       # mm, the whole clip
  jitter = np.array([1.0, -1.0, 1.0, -1.0])[:, None] * np.array([4.0, 0.0, 0.0])   # mean 0
  pred = target + offset + jitter[None, :, None, :]
  constant, varying = metrics.clip_error_split(pred, target)
  np.testing.assert_allclose(constant, 30.0)
  np.testing.assert_allclose(varying, 4.0)
  # The parts' squared norms add up to the error's.
  np.testing.assert_allclose(constant ** 2 + varying ** 2,
                             np.mean(np.linalg.norm(pred - target, axis=-1), -1) ** 2)
  # Root-relative: an offset of the root alone moves every other joint the other way.
  shifted = target.copy()
  shifted[..., 0, :] += 10.0
  constant, varying = metrics.clip_error_split(shifted, target, root=0)
  np.testing.assert_allclose(constant, np.sqrt(3) * 10.0 * 4 / 5)
  np.testing.assert_allclose(varying, 0.0, atol=1e-9)


def test_bone_length_split_separates_proportions_from_directions():
  rng = np.random.default_rng(0)
  parents = joints.H36M_PARENTS
  target = rng.normal(size=(6, 17, 3)) * 200
  lengths = poses.bone_lengths(target, parents)
  # Right directions, every bone 10% longer: all of the error is in the lengths.
  longer = poses.rescale_bones(target, parents, lengths * 1.1)
  length_error, directions = metrics.bone_length_split(longer, target, parents, root=0)
  np.testing.assert_allclose(length_error, 0.1 * lengths[:, 1:].mean(-1))
  np.testing.assert_allclose(directions, 0.0, atol=1e-9)
  assert metrics.mpjpe(longer, target, root=0) > 10
  # Right lengths, one wrist bent: none of it is, and the directions keep the whole error.
  bent = target.copy()
  wrist, elbow = 16, 15
  bone = bent[:, wrist] - bent[:, elbow]
  bent[:, wrist] = bent[:, elbow] + bone[:, [1, 0, 2]] * [1, -1, 1]  # same length, turned
  length_error, directions = metrics.bone_length_split(bent, target, parents, root=0)
  np.testing.assert_allclose(length_error, 0.0, atol=1e-9)
  np.testing.assert_allclose(directions, metrics.mpjpe(bent, target, root=0, reduce=False))
  with pytest.raises(ValueError, match="17, 3"):
    metrics.bone_length_split(target[:, :14], target[:, :14], parents)
