"""Procedural motion of the Human3.6M 17-joint skeleton.

A subject is a set of bone lengths (mm); an action is a set of smooth joint-angle curves
(degrees) over time plus a root trajectory; forward kinematics turns both into world
joint positions. World frame: x, y horizontal, z up, mm, floor at z = 0 (Human3.6M's
world frame is z-up too). Body frame at rest: x forward, y to the body's left, z up.

Everything is numpy and a pure function of the numpy Generator passed in, so a sequence
is reproducible from its seed alone (no global state, safe across processes).
"""

import dataclasses
from typing import Callable

import numpy as np

from rpsm_jax import joints

NUM_JOINTS = len(joints.H36M_JOINTS)
PARENTS = np.asarray(joints.H36M_PARENTS)
_J = {name: i for i, name in enumerate(joints.H36M_JOINTS)}

# Mean Human3.6M bone lengths (mm, parent -> joint; subject S1 averages rounded).
_MEAN_BONE_MM = {
    "RHip": 133., "RKnee": 445., "RFoot": 450., "LHip": 133., "LKnee": 445.,
    "LFoot": 450., "Spine": 233., "Thorax": 257., "Neck": 121., "Head": 115.,
    "LShoulder": 151., "LElbow": 279., "LWrist": 250., "RShoulder": 151.,
    "RElbow": 279., "RWrist": 250.,
}
# Bones that vary together within a subject (left and right kept symmetric).
_BONE_GROUP = {
    "RHip": "pelvis", "LHip": "pelvis", "RKnee": "thigh", "LKnee": "thigh",
    "RFoot": "shin", "LFoot": "shin", "Spine": "lower_back", "Thorax": "upper_back",
    "Neck": "neck", "Head": "head", "LShoulder": "shoulder", "RShoulder": "shoulder",
    "LElbow": "upper_arm", "RElbow": "upper_arm", "LWrist": "forearm",
    "RWrist": "forearm",
}
# Rest-pose bone directions in the body frame (x forward, y left, z up). The Neck joint
# of the 17-joint layout sits at the nose, the Head joint at the top of the head.
_REST_DIR = {
    "RHip": (0., -1., -0.08), "LHip": (0., 1., -0.08),
    "RKnee": (0., 0., -1.), "LKnee": (0., 0., -1.),
    "RFoot": (-0.03, 0., -1.), "LFoot": (-0.03, 0., -1.),
    "Spine": (0.02, 0., 1.), "Thorax": (-0.03, 0., 1.),
    "Neck": (0.45, 0., 0.9), "Head": (-0.35, 0., 0.95),
    "LShoulder": (-0.05, 1., -0.12), "RShoulder": (-0.05, -1., -0.12),
    "LElbow": (0., 0., -1.), "RElbow": (0., 0., -1.),
    "LWrist": (0., 0., -1.), "RWrist": (0., 0., -1.),
}
# Height of the ankle joint above the floor when the foot is flat (mm, before scaling).
_ANKLE_HEIGHT_MM = 90.

# Actions in the order configs take them (the first n are used). Names follow
# Human3.6M's spelling where the action exists there.
ACTIONS = (
    "Walking", "Jogging", "Waving", "Boxing", "Bending", "SittingDown", "Turning",
    "JumpingJacks", "Squatting", "Kicking",
)


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """One subject's body.

  Attributes:
    offsets: (17, 3) rest-pose offset of each joint from its parent, body frame, mm
      (row 0, the root, is zero).
    ankle_height: height of the ankle joints above a flat floor, mm.
    build: limb-thickness factor of this subject (1 = average), used by the renderer.
  """
  offsets: np.ndarray
  ankle_height: float
  build: float

  @property
  def bone_lengths(self) -> np.ndarray:
    """(17,) bone length from each joint's parent, mm (0 for the root)."""
    return np.linalg.norm(self.offsets, axis=-1)


def sample_skeleton(rng: np.random.Generator) -> Skeleton:
  """Draws a subject: overall size 0.9-1.1 x the Human3.6M mean, per-group jitter."""
  scale = rng.uniform(0.9, 1.1)
  groups = sorted(set(_BONE_GROUP.values()))
  factor = dict(zip(groups, np.clip(rng.normal(1., 0.05, len(groups)), 0.88, 1.12)))
  offsets = np.zeros((NUM_JOINTS, 3))
  for name, length in _MEAN_BONE_MM.items():
    direction = np.asarray(_REST_DIR[name])
    direction /= np.linalg.norm(direction)
    offsets[_J[name]] = direction * length * scale * factor[_BONE_GROUP[name]]
  return Skeleton(offsets=offsets, ankle_height=_ANKLE_HEIGHT_MM * scale,
                  build=float(rng.uniform(0.85, 1.2)))


# ---------------------------------------------------------------------------------------
# Rotations.


def _rot(axis: int, deg: np.ndarray) -> np.ndarray:
  """(T, 3, 3) right-handed rotations by `deg` degrees about a coordinate axis."""
  a = np.deg2rad(np.asarray(deg, np.float64))
  c, s = np.cos(a), np.sin(a)
  i, j = [(1, 2), (2, 0), (0, 1)][axis]
  m = np.zeros(a.shape + (3, 3))
  m[..., axis, axis] = 1.
  m[..., i, i], m[..., i, j], m[..., j, i], m[..., j, j] = c, -s, s, c
  return m


def rot_x(deg): return _rot(0, deg)
def rot_y(deg): return _rot(1, deg)  # Positive tips the body's top forward.
def rot_z(deg): return _rot(2, deg)  # Positive turns forward towards the left.


# ---------------------------------------------------------------------------------------
# Joint angles. All angles are degrees; positive flexion swings a hanging limb forward
# (hips, shoulders, elbows) or backward (knees); positive abduction moves a limb away
# from the body's midline on its own side.

ANGLE_NAMES = (
    "yaw", "pitch", "roll", "spine_flex", "spine_bend", "spine_twist", "chest_flex",
    "chest_twist", "neck_flex", "neck_yaw",
) + tuple(f"{s}_{n}" for s in "lr" for n in (
    "hip_flex", "hip_abd", "knee", "sh_flex", "sh_abd", "sh_twist", "elbow"))

# Anatomical clipping ranges (degrees) applied after the style noise.
_LIMITS = {"knee": (0., 150.), "elbow": (0., 150.), "hip_abd": (-15., 60.),
           "sh_abd": (-20., 180.)}


def local_rotations(a: dict[str, np.ndarray]) -> np.ndarray:
  """(T, 17, 3, 3) local rotation of each joint; joint j's rotates its children."""
  t = len(a["yaw"])
  q = np.broadcast_to(np.eye(3), (t, NUM_JOINTS, 3, 3)).copy()
  q[:, _J["Hip"]] = rot_z(a["yaw"]) @ rot_y(a["pitch"]) @ rot_x(a["roll"])
  q[:, _J["Spine"]] = (rot_z(a["spine_twist"]) @ rot_y(a["spine_flex"])
                       @ rot_x(a["spine_bend"]))
  q[:, _J["Thorax"]] = rot_z(a["chest_twist"]) @ rot_y(a["chest_flex"])
  q[:, _J["Neck"]] = rot_z(a["neck_yaw"]) @ rot_y(a["neck_flex"])
  for s, side in (("l", 1.), ("r", -1.)):
    p = s.upper()
    q[:, _J[p + "Hip"]] = rot_y(-a[s + "_hip_flex"]) @ rot_x(side * a[s + "_hip_abd"])
    q[:, _J[p + "Knee"]] = rot_y(a[s + "_knee"])
    q[:, _J[p + "Shoulder"]] = (rot_y(-a[s + "_sh_flex"]) @ rot_x(side * a[s + "_sh_abd"])
                                @ rot_z(side * a[s + "_sh_twist"]))
    q[:, _J[p + "Elbow"]] = rot_y(-a[s + "_elbow"])
  return q


def forward_kinematics(offsets: np.ndarray, rotations: np.ndarray) -> np.ndarray:
  """Joint positions relative to the root.

  Args:
    offsets: (17, 3) rest offsets from the parent, mm.
    rotations: (T, 17, 3, 3) local rotations.

  Returns:
    (T, 17, 3) positions in the frame the root rotation maps into, mm, root at 0.
  """
  t = rotations.shape[0]
  pos = np.zeros((t, NUM_JOINTS, 3))
  glob = np.zeros((t, NUM_JOINTS, 3, 3))
  for j in range(NUM_JOINTS):  # Parents precede children in the H36M order.
    p = PARENTS[j]
    if p < 0:
      glob[:, j] = rotations[:, j]
      continue
    pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
    glob[:, j] = glob[:, p] @ rotations[:, j]
  return pos


# ---------------------------------------------------------------------------------------
# Actions. Each returns (angles, root): angles maps ANGLE_NAMES (a subset; missing ones
# are 0) to (T,) degrees; root holds 'xy' (T, 2) mm or None (stand in place, feet
# pinned), and 'lift' (T,) extra height in mm (jumps).


def _zeros(t):
  return np.zeros_like(t)


def _smoothstep(x):
  x = np.clip(x, 0., 1.)
  return x * x * (3. - 2. * x)


def _relu(x):
  return np.maximum(x, 0.)


def _arc_path(rng, t, speed_mm_s):
  """Walks along a circle around the capture-area centre; heading is the tangent."""
  radius = rng.uniform(1000., 1500.)
  direction = rng.choice([-1., 1.])
  phi = rng.uniform(0., 2 * np.pi) + direction * speed_mm_s * t / radius
  xy = radius * np.stack([np.cos(phi), np.sin(phi)], -1)
  yaw = np.rad2deg(phi + direction * np.pi / 2)
  return xy, yaw


def _walking(rng, t, amp):
  f = rng.uniform(0.85, 1.0)
  th = 2 * np.pi * f * t
  a = {}
  for s, ph in (("l", 0.), ("r", np.pi)):
    c = th + ph
    a[s + "_hip_flex"] = 22 * amp * np.sin(c) + 4
    # Knee flexion peaks (~50 deg) early in the swing, a little in the stance.
    a[s + "_knee"] = 6 + 45 * amp * _relu(np.cos(c + 0.3)) ** 2 + 8 * _relu(-np.cos(c))
    a[s + "_sh_flex"] = -18 * amp * np.sin(c)
    a[s + "_sh_abd"] = 8 + _zeros(t)
    a[s + "_elbow"] = 15 + 12 * _relu(-np.sin(c))
  a["pitch"] = 3 + _zeros(t)
  a["spine_twist"] = 5 * amp * np.sin(th)
  a["chest_twist"] = -6 * amp * np.sin(th)
  a["roll"] = 3 * np.sin(th)
  xy, yaw = _arc_path(rng, t, f * 1400. * amp)
  a["yaw"] = yaw
  return a, {"xy": xy, "lift": _zeros(t)}


def _jogging(rng, t, amp):
  f = rng.uniform(1.3, 1.5)
  th = 2 * np.pi * f * t
  a = {}
  for s, ph in (("l", 0.), ("r", np.pi)):
    c = th + ph
    a[s + "_hip_flex"] = 30 * amp * np.sin(c) + 10
    a[s + "_knee"] = 20 + 80 * amp * _relu(np.cos(c)) ** 1.5
    a[s + "_sh_flex"] = -30 * amp * np.sin(c) + 10
    a[s + "_sh_abd"] = 12 + _zeros(t)
    a[s + "_sh_twist"] = -15 + _zeros(t)
    a[s + "_elbow"] = 85 + 12 * np.sin(c)
  a["pitch"] = 8 + _zeros(t)
  a["spine_twist"] = 7 * amp * np.sin(th)
  a["chest_twist"] = -9 * amp * np.sin(th)
  xy, yaw = _arc_path(rng, t, f * 2000. * amp)
  a["yaw"] = yaw
  return a, {"xy": xy, "lift": 35 * amp * _relu(np.sin(2 * th - np.pi / 2))}


def _waving(rng, t, amp):
  f = rng.uniform(1.2, 2.0)
  th = 2 * np.pi * f * t
  style = rng.choice(["l", "r", "both"], p=[0.4, 0.4, 0.2])
  a = {"spine_bend": 4 * np.sin(2 * np.pi * 0.25 * t),
       "neck_yaw": rng.uniform(-20, 20) + _zeros(t)}
  for s in "lr":
    if style in (s, "both"):
      a[s + "_sh_abd"] = rng.uniform(85, 120) + 10 * np.sin(0.5 * th)
      a[s + "_sh_flex"] = rng.uniform(-10, 30) + _zeros(t)
      a[s + "_sh_twist"] = 80 + _zeros(t)
      a[s + "_elbow"] = 60 + 35 * amp * np.sin(th)
    else:
      a[s + "_sh_abd"] = 8 + _zeros(t)
      a[s + "_elbow"] = rng.uniform(5, 40) + _zeros(t)
  for s in "lr":
    a[s + "_knee"] = 4 + _zeros(t)
  return a, {"xy": None, "lift": _zeros(t)}


def _boxing(rng, t, amp):
  bounce = 2 * np.pi * rng.uniform(1.5, 2.2) * t
  th = 2 * np.pi * rng.uniform(0.6, 1.0) * t
  punch = {"l": _relu(np.sin(th)) ** 4, "r": _relu(-np.sin(th)) ** 4}
  a = {"pitch": 6 + _zeros(t), "spine_twist": 22 * amp * (punch["r"] - punch["l"]),
       "chest_twist": 8 * amp * (punch["r"] - punch["l"]),
       "neck_flex": 10 + _zeros(t)}
  for s in "lr":
    p = punch[s] * amp
    a[s + "_sh_flex"] = 40 + 50 * p
    a[s + "_sh_abd"] = 25 - 15 * p
    a[s + "_sh_twist"] = -20 + _zeros(t)
    a[s + "_elbow"] = 125 - 110 * np.minimum(p, 1.)
    a[s + "_hip_abd"] = 8 + _zeros(t)
    a[s + "_hip_flex"] = 18 + 4 * np.sin(bounce)
    a[s + "_knee"] = 25 + 8 * np.sin(bounce)
  return a, {"xy": None, "lift": _zeros(t)}


def _bending(rng, t, amp):
  s_ = 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(3.5, 5.))
  pitch = 70 * amp * s_
  a = {"pitch": pitch, "spine_flex": 20 * s_, "chest_flex": 10 * s_,
       "neck_flex": -20 * s_}
  reach = rng.uniform(0.8, 1.0)
  for s in "lr":
    a[s + "_hip_flex"] = 0.85 * pitch
    a[s + "_knee"] = 5 + 20 * amp * s_
    # Arms hang (towards the floor) as the torso tips over.
    a[s + "_sh_flex"] = reach * (pitch + 30 * s_)
    a[s + "_sh_abd"] = 6 + _zeros(t)
    a[s + "_elbow"] = 10 + _zeros(t)
  return a, {"xy": None, "lift": _zeros(t)}


def _sitting_down(rng, t, amp):
  # Stand -> sit -> stand on an invisible chair, one cycle per period.
  u = np.mod(t / rng.uniform(5., 7.), 1.)
  s_ = _smoothstep((u - 0.05) / 0.3) - _smoothstep((u - 0.6) / 0.3)
  lean = 30 * np.sin(np.pi * s_) + 8 * s_
  a = {"pitch": lean, "neck_flex": -0.4 * lean}
  for s in "lr":
    a[s + "_hip_flex"] = 90 * amp * s_ + lean
    a[s + "_knee"] = 95 * amp * s_ + 3
    a[s + "_hip_abd"] = 5 + 5 * s_
    a[s + "_sh_flex"] = 15 + 35 * s_
    a[s + "_sh_abd"] = 8 + _zeros(t)
    a[s + "_elbow"] = 15 + 55 * s_
  return a, {"xy": None, "lift": _zeros(t)}


def _turning(rng, t, amp):
  direction = rng.choice([-1., 1.])
  rate = rng.uniform(60., 120.) * direction  # deg/s
  wobble = rng.uniform(0.2, 0.5)
  yaw = rate * (t + 0.3 / (2 * np.pi * wobble) * np.sin(2 * np.pi * wobble * t))
  th = 2 * np.pi * rng.uniform(1.5, 2.0) * t
  a = {"yaw": yaw, "neck_yaw": 12 * direction + _zeros(t),
       "spine_twist": 5 * direction + _zeros(t)}
  for s, ph in (("l", 0.), ("r", np.pi)):
    step = _relu(np.sin(th + ph))
    a[s + "_hip_flex"] = 14 * amp * step
    a[s + "_knee"] = 5 + 30 * amp * step
    a[s + "_sh_abd"] = 12 + _zeros(t)
    a[s + "_sh_flex"] = 5 + 6 * np.sin(th + ph)
    a[s + "_elbow"] = 20 + _zeros(t)
  return a, {"xy": None, "lift": _zeros(t)}


def _jumping_jacks(rng, t, amp):
  th = 2 * np.pi * rng.uniform(0.8, 1.2) * t
  s_ = 0.5 - 0.5 * np.cos(th)
  a = {}
  for s in "lr":
    a[s + "_sh_abd"] = 10 + 150 * amp * s_
    a[s + "_elbow"] = 10 + 10 * s_
    a[s + "_hip_abd"] = 3 + 15 * s_
    a[s + "_knee"] = 5 + 20 * np.abs(np.cos(th))
    a[s + "_hip_flex"] = 3 + 10 * np.abs(np.cos(th))
  # Airborne around the two fast moments of each cycle (feet apart, feet together).
  return a, {"xy": None, "lift": 110 * amp * _relu(np.abs(np.sin(th)) - 0.7) / 0.3}


def _squatting(rng, t, amp):
  s_ = 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(2.5, 4.))
  pitch = 30 * s_
  a = {"pitch": pitch, "spine_flex": 10 * s_, "neck_flex": -25 * s_}
  for s in "lr":
    a[s + "_hip_flex"] = 100 * amp * s_ + pitch
    a[s + "_knee"] = 120 * amp * s_ + 3
    a[s + "_hip_abd"] = 8 + 10 * s_
    a[s + "_sh_flex"] = 10 + 75 * s_
    a[s + "_sh_abd"] = 5 + _zeros(t)
    a[s + "_elbow"] = 10 + _zeros(t)
  return a, {"xy": None, "lift": _zeros(t)}


def _kicking(rng, t, amp):
  th = 2 * np.pi * t / rng.uniform(1.2, 1.8)
  kick = {"l": _relu(np.sin(th)) ** 2, "r": _relu(-np.sin(th)) ** 2}
  a = {"pitch": -10 * (kick["l"] + kick["r"])}
  for s in "lr":
    k = kick[s]
    a[s + "_hip_flex"] = 85 * amp * k
    a[s + "_knee"] = 5 + 100 * k * (1 - k) * 4 * (1 - k)  # chamber, then extend
    a[s + "_sh_flex"] = 35 + _zeros(t)
    a[s + "_sh_abd"] = 20 + _zeros(t)
    a[s + "_elbow"] = 100 + _zeros(t)
  return a, {"xy": None, "lift": _zeros(t)}


_ACTION_FNS: dict[str, Callable] = dict(zip(ACTIONS, (
    _walking, _jogging, _waving, _boxing, _bending, _sitting_down, _turning,
    _jumping_jacks, _squatting, _kicking)))


def _style_noise(rng, t, amplitude_deg):
  """Smooth per-sequence jitter: two low-frequency sinusoids with random phases."""
  freqs = rng.uniform(0.1, 0.6, 2)
  phases = rng.uniform(0, 2 * np.pi, 2)
  amps = rng.uniform(0, amplitude_deg, 2)
  return sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in zip(amps, freqs, phases))


def sample_sequence(rng: np.random.Generator, skeleton: Skeleton, action: str,
                    num_frames: int, fps: float) -> np.ndarray:
  """One motion sequence of a subject.

  Args:
    rng: the sequence's generator (phase, speed, amplitude, style and path).
    skeleton: the subject.
    action: one of ACTIONS.
    num_frames: T.
    fps: frames per second of the output.

  Returns:
    (T, 17, 3) world joint positions, mm (z up, floor at 0).
  """
  # Random start time (phase) and speed of the action; amplitude scales its angles.
  t = rng.uniform(0., 10.) + np.arange(num_frames) / fps * rng.uniform(0.85, 1.15)
  amp = rng.uniform(0.8, 1.2)
  angles, root = _ACTION_FNS[action](rng, t, amp)
  full = {}
  for name in ANGLE_NAMES:
    base = angles.get(name, _zeros(t))
    noise = _style_noise(rng, t, 8. if name in ("yaw", "neck_yaw") else 4.)
    value = base + noise
    for key, (lo, hi) in _LIMITS.items():
      if name.endswith(key):
        value = np.clip(value, lo, hi)
    full[name] = value
  if root["xy"] is None:
    full["yaw"] = full["yaw"] + rng.uniform(-180., 180.)
  pos = forward_kinematics(skeleton.offsets, local_rotations(full))

  feet = pos[:, [_J["LFoot"], _J["RFoot"]]]  # (T, 2, 3)
  if root["xy"] is None:
    # Stand in place: keep the weight-bearing (lower) foot still on the floor.
    w = np.exp(-(feet[..., 2] - feet[..., 2].min(-1, keepdims=True)) / 40.)
    w /= w.sum(-1, keepdims=True)
    support = (w[..., None] * feet[..., :2]).sum(1)
    drift = np.stack([_style_noise(rng, t, 40.), _style_noise(rng, t, 40.)], -1)
    xy = rng.normal(0., 300., 2) - support + drift
  else:
    xy = root["xy"] + rng.normal(0., 150., 2)
  z = skeleton.ankle_height - feet[..., 2].min(-1) + root["lift"]
  return pos + np.concatenate([xy, z[:, None]], -1)[:, None, :]
