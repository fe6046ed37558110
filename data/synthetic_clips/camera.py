"""Pinhole cameras placed like Human3.6M's four, and the devkit projection.

Camera frame: x right, y down, z forward (optical axis), mm. A world point X maps to
camera coordinates R @ (X - position).
"""

import dataclasses

import numpy as np

IMAGE_SIZE = (1000, 1000)  # (width, height) of the full camera image, pixels.


@dataclasses.dataclass(frozen=True)
class Camera:
  """One camera.

  Attributes:
    name: e.g. 'cam1'.
    rotation: (3, 3) world -> camera rotation.
    position: (3,) camera centre in world coordinates, mm.
    f: (2,) focal lengths, pixels.
    c: (2,) principal point, pixels.
    k: (3,) radial distortion k1..k3 (Human3.6M devkit model).
    p: (2,) tangential distortion p1, p2.
    image_size: (width, height), pixels.
  """
  name: str
  rotation: np.ndarray
  position: np.ndarray
  f: np.ndarray
  c: np.ndarray
  k: np.ndarray
  p: np.ndarray
  image_size: tuple[int, int] = IMAGE_SIZE

  def world_to_camera(self, points: np.ndarray) -> np.ndarray:
    """(..., 3) world mm -> (..., 3) camera mm."""
    return (points - self.position) @ self.rotation.T

  def project(self, points_cam: np.ndarray) -> np.ndarray:
    """(..., 3) camera mm -> (..., 2) full-image pixels."""
    return project(points_cam, self.f, self.c, self.k, self.p)


def project(points_cam, f, c, k, p):
  """The Human3.6M devkit's radial-tangential projection (RPSM_REFERENCE.md).

  Args:
    points_cam: (..., 3) camera coordinates, mm, z > 0.
    f, c: (2,) focal lengths and principal point, pixels.
    k: (3,) radial coefficients; p: (2,) tangential coefficients.

  Returns:
    (..., 2) pixel coordinates.
  """
  xy = points_cam[..., :2] / points_cam[..., 2:3]
  r2 = np.sum(xy ** 2, -1, keepdims=True)
  radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
  tan = p[0] * xy[..., 1:2] + p[1] * xy[..., 0:1]
  xy = xy * (radial + tan) + np.asarray([p[1], p[0]]) * r2
  return f * xy + c


def look_at(position: np.ndarray, target: np.ndarray, roll_deg: float = 0.) -> np.ndarray:
  """(3, 3) world -> camera rotation of a camera at `position` looking at `target`.

  The world is z-up; the camera's x axis stays horizontal (before `roll_deg`).
  """
  z = target - position
  z = z / np.linalg.norm(z)
  x = np.cross(z, [0., 0., 1.])
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  r = np.stack([x, y, z])
  a = np.deg2rad(roll_deg)
  roll = np.array([[np.cos(a), -np.sin(a), 0.], [np.sin(a), np.cos(a), 0.], [0., 0., 1.]])
  return roll @ r


def make_rig(seed: int, subject_number: int, num_cameras: int) -> list[Camera]:
  """The cameras that film one subject.

  Like Human3.6M, the rig is fixed (intrinsics and nominal placement depend only on the
  seed and camera index: cameras in the room's corners, 4.5-5.5 m from the centre,
  1-2 m high, looking at about 1 m above the floor) and moves slightly between subjects.

  Args:
    seed: dataset seed.
    subject_number: numeric part of the subject's name; selects the per-subject jitter.
    num_cameras: number of cameras, evenly spread in azimuth.

  Returns:
    num_cameras Cameras named cam1, cam2, ...
  """
  rig_rng = np.random.default_rng([seed, 7001])
  rig_azimuth = rig_rng.uniform(0., 360.)
  cams = []
  for i in range(num_cameras):
    rng = np.random.default_rng([seed, 7002, i])
    azimuth = rig_azimuth + 360. * (i + 0.5) / num_cameras + rng.uniform(-15., 15.)
    distance = rng.uniform(4500., 5500.)
    height = rng.uniform(1000., 2000.)
    target = np.array([*rng.normal(0., 200., 2), rng.uniform(800., 1200.)])
    f = np.full(2, rng.uniform(1130., 1170.)) * (1 + rng.normal(0., 0.002, 2))
    c = np.asarray(IMAGE_SIZE, np.float64) / 2 + rng.normal(0., 8., 2)
    # Per-subject jitter: the rig was re-assembled between capture sessions.
    jit = np.random.default_rng([seed, 7003, subject_number, i])
    a = np.deg2rad(azimuth + jit.normal(0., 1.5))
    position = np.array([distance * np.cos(a), distance * np.sin(a), height])
    position += jit.normal(0., 50., 3)
    target = target + jit.normal(0., 50., 3)
    cams.append(Camera(
        name=f"cam{i + 1}", rotation=look_at(position, target, jit.normal(0., 1.)),
        position=position, f=f, c=c, k=np.zeros(3), p=np.zeros(2)))
  return cams
