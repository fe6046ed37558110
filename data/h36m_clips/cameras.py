"""Intrinsics of the four Human3.6M cameras and the devkit's projection.

The numbers are the dataset devkit's camera metadata (the same for every subject: only
the extrinsics change between subjects). Peers carry them as constants, e.g.
VideoPose3D's `common/h36m_dataset.py` (`h36m_cameras_intrinsic_params`); note that
VideoPose3D lists the tangential pair in the reverse order, (p2, p1), to suit its own
projection formula. Here `p` is (p1, p2) in the devkit's order and `project` is the
devkit's formula (RPSM_REFERENCE.md).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Intrinsics:
  """One camera's intrinsics in full-image pixels.

  Attributes:
    f: (fx, fy) focal lengths, pixels.
    c: (cx, cy) principal point, pixels.
    k: (k1, k2, k3) radial distortion.
    p: (p1, p2) tangential distortion, devkit order.
    image_size: (width, height) of the camera's video, pixels (nominal: the builder
      stores the size of the video it reads).
  """
  f: tuple[float, float]
  c: tuple[float, float]
  k: tuple[float, float, float]
  p: tuple[float, float]
  image_size: tuple[int, int] = (1000, 1000)


# Keyed by camera serial, the name the release's files carry.
H36M_CAMERAS = {
    "54138969": Intrinsics(
        f=(1145.04940458804, 1143.78109572365),
        c=(512.541504956548, 515.4514869776),
        k=(-0.207098910824901, 0.247775183068982, -0.00307515035078854),
        p=(-0.00142447157470321, -0.000975698859470499),
        image_size=(1000, 1002)),
    "55011271": Intrinsics(
        f=(1149.67569986785, 1147.59161666764),
        c=(508.848621645943, 508.064917088557),
        k=(-0.194213629607385, 0.240408539138292, 0.00681997559022603),
        p=(-0.0027408943961907, -0.001619026613787),
        image_size=(1000, 1000)),
    "58860488": Intrinsics(
        f=(1149.14071676148, 1148.7989685676),
        c=(519.815837182153, 501.402658888552),
        k=(-0.208338188251856, 0.255488007488945, -0.00246049749891915),
        p=(-0.000759999321030303, 0.00148438698385668),
        image_size=(1000, 1000)),
    "60457274": Intrinsics(
        f=(1145.51133842318, 1144.77392807652),
        c=(514.968197319863, 501.882018537695),
        k=(-0.198384093827848, 0.218323676298049, -0.00894780704152122),
        p=(-0.00181336200488089, -0.000587205583421232),
        image_size=(1000, 1002)),
}


def project(points_cam: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
  """Projects camera-frame points with the devkit's radial-tangential model.

  With x = X/Z, y = Y/Z, r2 = x^2 + y^2: radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3,
  tan = p1 y + p2 x, distorted = (x, y) (radial + tan) + (p2, p1) r2,
  pixel = f * distorted + c.

  Args:
    points_cam: (..., 3) camera coordinates, mm, Z > 0.
    intrinsics: the camera.

  Returns:
    (..., 2) float64 full-image pixel coordinates.
  """
  points_cam = np.asarray(points_cam, np.float64)
  k1, k2, k3 = intrinsics.k
  p1, p2 = intrinsics.p
  xy = points_cam[..., :2] / points_cam[..., 2:3]
  r2 = np.sum(xy**2, axis=-1, keepdims=True)
  radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
  tan = p1 * xy[..., 1:2] + p2 * xy[..., 0:1]
  xy = xy * (radial + tan) + np.array([p2, p1]) * r2
  return np.asarray(intrinsics.f) * xy + np.asarray(intrinsics.c)
