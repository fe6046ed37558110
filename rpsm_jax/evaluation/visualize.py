"""Skeleton renderings with OpenCV: 3D pose panels for predict's animation, eval figures.

Poses are root-relative camera-frame joints in mm (x right, y down, z away from the
camera). A panel shows them from a fixed viewpoint, as the paper's Figures 1 and 5 do:
rotated `azimuth` degrees about the vertical axis and tilted `elevation` degrees down,
projected orthographically at a fixed scale so that panels of different frames, stages
and runs compare directly. The body's left side is blue, its right side red (the synthetic
renderer's colours), the spine grey.
"""

import dataclasses
import os
from typing import Optional, Sequence

import cv2
import jax
import numpy as np

from rpsm_jax import poses
from rpsm_jax import joints

# BGR, as cv2 draws.
LEFT = (200, 110, 30)
RIGHT = (40, 40, 215)
CENTRE = (90, 90, 90)
TRUTH = (150, 150, 150)
BACKGROUND = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # sub-pixel bits for cv2 drawing


@dataclasses.dataclass(frozen=True)
class View:
  """A fixed orthographic viewpoint.

  Attributes:
    azimuth: degrees of rotation about the vertical (camera y) axis.
    elevation: degrees the view looks down on the body.
    extent: mm from the root to the panel's edge (the panel spans 2 * extent).
  """
  azimuth: float = 35.0
  elevation: float = 12.0
  extent: float = 1000.0

  def project(self, pose_mm: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) mm -> ((P, 2) panel pixels, (P,) depth, larger = farther)."""
    a, e = np.deg2rad(self.azimuth), np.deg2rad(self.elevation)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
    p = np.asarray(pose_mm, np.float64) @ (rx @ ry).T
    scale = size / (2.0 * self.extent)
    return p[:, :2] * scale + size / 2.0, p[:, 2]


def bone_colour(name: str) -> tuple[int, int, int]:
  if joints.is_left(name):
    return LEFT
  if joints.is_right(name):
    return RIGHT
  return CENTRE


def draw_skeleton(panel: np.ndarray, pose_mm: np.ndarray, parents: Sequence[int],
                  names: Sequence[str], view: View = View(),
                  colour: Optional[tuple[int, int, int]] = None,
                  thickness: int = 2) -> np.ndarray:
  """Draws a (P, 3) mm skeleton into a square BGR panel, in place; returns the panel.

  Bones are painted far to near; `colour` overrides the left/right colouring (used for
  ground truth drawn under a prediction).
  """
  size = panel.shape[0]
  uv, depth = view.project(pose_mm, size)
  pts = np.round(uv * (1 << _SHIFT)).astype(np.int64)
  bones = [j for j in range(len(parents)) if parents[j] >= 0]
  bones.sort(key=lambda j: -(depth[j] + depth[parents[j]]))
  for j in bones:
    c = colour or bone_colour(names[j])
    cv2.line(panel, tuple(pts[j].tolist()), tuple(pts[parents[j]].tolist()), c, thickness,
             cv2.LINE_AA, _SHIFT)
  radius = max(1, thickness) << _SHIFT
  for j in np.argsort(-depth):
    c = colour or bone_colour(names[j])
    cv2.circle(panel, tuple(pts[j].tolist()), radius, c, -1, cv2.LINE_AA, _SHIFT)
  return panel


def pose_panel(pose_mm: np.ndarray, parents: Sequence[int], names: Sequence[str],
               size: int, title: str = "", truth_mm: Optional[np.ndarray] = None,
               view: View = View()) -> np.ndarray:
  """A (size, size, 3) BGR panel: a floor line, optional grey ground truth, the pose."""
  panel = np.full((size, size, 3), BACKGROUND, np.uint8)
  # A vertical and a horizontal axis through the root, for orientation.
  cv2.line(panel, (size // 2, 0), (size // 2, size), (235, 235, 235), 1)
  cv2.line(panel, (0, size // 2), (size, size // 2), (235, 235, 235), 1)
  t = max(1, size // 96)
  if truth_mm is not None:
    draw_skeleton(panel, truth_mm, parents, names, view, colour=TRUTH, thickness=t + 2)
  draw_skeleton(panel, pose_mm, parents, names, view, thickness=t)
  if title:
    put_text(panel, title, (4, 4))
  return panel


def put_text(image: np.ndarray, text: str, origin: tuple[int, int],
             scale: Optional[float] = None, colour=(30, 30, 30)) -> None:
  """Writes one line of text with its top-left corner at `origin`, in place."""
  scale = scale or max(0.3, image.shape[0] / 400)
  (_, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
  cv2.putText(image, text, (origin[0], origin[1] + h), _FONT, scale, colour, 1, cv2.LINE_AA)


def fit_height(image: np.ndarray, height: int) -> np.ndarray:
  """Resizes an image to `height` rows, keeping its aspect ratio."""
  h, w = image.shape[:2]
  if h == height:
    return image
  width = max(1, int(round(w * height / h)))
  interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
  return cv2.resize(image, (width, height), interpolation=interp)


# --------------------------------------------------------------------------- eval figure


def plot_eval_clips(model, params, loader, norm: poses.Normalization, outpath: str,
                    num_clips: int = 3, panel_size: int = 128,
                    view: View = View()) -> str:
  """Writes a PNG of the first evaluation clips: frames, then each stage's prediction over
  the ground truth (grey), with each frame's MPJPE in mm.

  One block of rows per clip: row 0 the input frames, row k the stage-k poses; one column
  per frame (padding frames of the last clip are left blank).

  Args:
    model: the RPSM module.
    params: its parameters.
    loader: an input_pipeline.ClipLoader (evaluation: clips in order, no augmentation).
    norm: the run's normalisation statistics.
    outpath: the PNG to write (its directory is created).
    num_clips: clips to show (fewer if the split has fewer).
    panel_size: side of each panel, pixels.
    view: the skeleton viewpoint.

  Returns:
    `outpath`.
  """
  forward = jax.jit(poses.make_forward_mm(model, norm))
  images, preds, truths, masks = [], [], [], []
  step = 0
  while sum(len(m) for m in masks) < num_clips and step < loader.num_batches:
    batch = loader.batch(step)
    keep = batch["mask"].any(axis=1)
    images.append(batch["image"][keep])
    preds.append(np.asarray(forward(params, batch["image"]))[:, keep])
    truths.append(poses.root_relative(batch["pose_3d_mm"][keep], norm.root_joint))
    masks.append(batch["mask"][keep])
    step += 1
  if not masks or not sum(len(m) for m in masks):
    raise ValueError(f"{outpath}: the evaluation loader holds no clip to plot")
  image = np.concatenate(images)[:num_clips]        # (N, T, S, S, 3) RGB
  pred = np.concatenate(preds, axis=1)[:, :num_clips]   # (K, N, T, P, 3) mm
  truth = np.concatenate(truths)[:num_clips]       # (N, T, P, 3) mm
  mask = np.concatenate(masks)[:num_clips]         # (N, T)
  k, n, t, p = pred.shape[:4]
  names, parents = joints.names(p), joints.parents(p)
  label_w = panel_size // 2
  blank = np.full((panel_size, panel_size, 3), BACKGROUND, np.uint8)
  def frame_panel(i, j):
    frame = cv2.resize(cv2.cvtColor(image[i, j], cv2.COLOR_RGB2BGR),
                       (panel_size, panel_size), interpolation=cv2.INTER_AREA)
    put_text(frame, f"clip {i} t={j}", (3, 3), colour=(255, 255, 255))
    return frame

  def stage_panel(s, i, j):
    err = float(np.linalg.norm(pred[s, i, j] - truth[i, j], axis=-1).mean())
    return pose_panel(pred[s, i, j], parents, names, panel_size, title=f"{err:.0f} mm",
                      truth_mm=truth[i, j], view=view)

  def row(i, make):  # one panel per frame, blank for padding
    return [make(j) if mask[i, j] else blank for j in range(t)]

  rows = []
  for i in range(n):
    rows.append(_labelled_row(row(i, lambda j: frame_panel(i, j)), "input", label_w))
    for s in range(k):
      panels = row(i, lambda j: stage_panel(s, i, j))
      rows.append(_labelled_row(panels, f"stage {s + 1}", label_w))
  legend = np.full((panel_size // 4, rows[0].shape[1], 3), BACKGROUND, np.uint8)
  put_text(legend, "grey: ground truth; blue: left, red: right (prediction); "
           "mm = MPJPE of the frame", (4, 4), scale=0.4)
  figure = np.concatenate([legend] + rows, axis=0)
  os.makedirs(os.path.dirname(os.path.abspath(outpath)), exist_ok=True)
  if not cv2.imwrite(outpath, figure):
    raise OSError(f"could not write {outpath}")
  return outpath


def _labelled_row(panels: list[np.ndarray], label: str, label_w: int) -> np.ndarray:
  h = panels[0].shape[0]
  tag = np.full((h, label_w, 3), BACKGROUND, np.uint8)
  put_text(tag, label, (3, h // 2 - 6), scale=0.4)
  row = np.concatenate([tag] + panels, axis=1)
  cv2.line(row, (0, h - 1), (row.shape[1], h - 1), (210, 210, 210), 1)
  return row
