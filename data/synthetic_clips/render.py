"""Draws a posed skeleton as a shaded stick-and-blob body over a static background.

Only what a camera would see: limbs are thick antialiased segments whose width follows
perspective, the body's left side is blue-ish and its right side red-ish (the cue that
makes left/right and facing direction learnable, like clothing and faces do in real
video), nearer parts are painted over farther ones, and brightness falls off with depth
so that depth is only partly visible. Everything is drawn straight into the S x S crop:
full-image pixel coordinates map to crop pixels by (u - x0) * S / side. Pixel
coordinates use the edge convention of data/README.md: pixel j spans [j, j + 1].
"""

import colorsys
import dataclasses

import cv2
import numpy as np

from rpsm_jax import joints

_J = {name: i for i, name in enumerate(joints.H36M_JOINTS)}
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel (1/16 px) endpoints.
_SUBSEGMENTS = 3  # Pieces per limb, each with its own depth (shading and draw order).

# (first joint, second joint, radius in mm for build 1, colour key).
_LIMBS = (
    ("Hip", "Spine", 115., "torso"), ("Spine", "Thorax", 125., "torso"),
    ("LHip", "RHip", 80., "torso"), ("LShoulder", "RShoulder", 60., "torso"),
    ("Thorax", "Neck", 45., "skin"),
    ("LHip", "LKnee", 68., "left_leg"), ("LKnee", "LFoot", 50., "left_leg"),
    ("RHip", "RKnee", 68., "right_leg"), ("RKnee", "RFoot", 50., "right_leg"),
    ("LShoulder", "LElbow", 45., "left_arm"), ("LElbow", "LWrist", 37., "left_arm"),
    ("RShoulder", "RElbow", 45., "right_arm"), ("RElbow", "RWrist", 37., "right_arm"),
)
# (joint, radius in mm, colour key): hands, feet.
_BLOBS = (("LWrist", 42., "skin"), ("RWrist", 42., "skin"),
          ("LFoot", 50., "left_leg"), ("RFoot", 50., "right_leg"))
_TORSO_POLYGON = ("LHip", "RHip", "RShoulder", "LShoulder")


COLOURS = ("torso", "skin", "face", "left_arm", "left_leg", "right_arm", "right_leg")
_C = {name: i for i, name in enumerate(COLOURS)}


@dataclasses.dataclass(frozen=True)
class Appearance:
  """Clothing of one subject: (len(COLOURS), 3) RGB in [0, 255], rows as COLOURS."""
  colours: np.ndarray


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What to draw for one frame, in full-image pixels; N shapes.

  Attributes:
    points: (N, 4, 2) pixels; the first num_points rows are used: 1 = disc, 2 = thick
      segment, 4 = filled polygon.
    num_points: (N,) int.
    radius: (N,) pixels (half the stroke width; 0 for polygons).
    depth: (N,) camera z used for shading and painter's order, mm.
    colour: (N,) int row of Appearance.colours.
  """
  points: np.ndarray
  num_points: np.ndarray
  radius: np.ndarray
  depth: np.ndarray
  colour: np.ndarray


def _hsv(h, s, v):
  return np.asarray(colorsys.hsv_to_rgb(h % 1., s, v)) * 255.


def sample_appearance(rng: np.random.Generator) -> Appearance:
  """Left side blue, right side red, torso green-grey, pale skin: never confusable."""
  left = rng.uniform(0.55, 0.68)
  right = rng.uniform(-0.04, 0.03)
  torso = rng.uniform(0.22, 0.42)
  sat = rng.uniform(0.65, 0.95)
  colours = {
      "left_arm": _hsv(left, sat, rng.uniform(0.8, 0.95)),
      "left_leg": _hsv(left + 0.03, sat, rng.uniform(0.6, 0.75)),
      "right_arm": _hsv(right, sat, rng.uniform(0.85, 0.98)),
      "right_leg": _hsv(right + 0.02, sat, rng.uniform(0.62, 0.78)),
      "torso": _hsv(torso, rng.uniform(0.15, 0.6), rng.uniform(0.55, 0.85)),
      "skin": _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.2, 0.45), rng.uniform(0.45, 0.95)),
      "face": _hsv(0.02, 0.6, 0.3),
  }
  return Appearance(colours=np.stack([colours[c] for c in COLOURS]))


_LIMB_A = np.array([_J[a] for a, _, _, _ in _LIMBS])
_LIMB_B = np.array([_J[b] for _, b, _, _ in _LIMBS])
_LIMB_R = np.array([r for _, _, r, _ in _LIMBS])
_LIMB_C = np.array([_C[c] for _, _, _, c in _LIMBS])
_BLOB_J = np.array([_J[j] for j, _, _ in _BLOBS])
_BLOB_R = np.array([r for _, r, _ in _BLOBS])
_BLOB_C = np.array([_C[c] for _, _, c in _BLOBS])
_POLY_J = np.array([_J[j] for j in _TORSO_POLYGON])
_NOSE, _TOP = _J["Neck"], _J["Head"]


def body_shapes(uv: np.ndarray, z: np.ndarray, head_bone_mm: float, build: float,
                focal: float) -> Shapes:
  """The body of one frame as shapes in full-image pixels.

  Args:
    uv: (17, 2) projected joints, full-image pixels.
    z: (17,) joint depths in the camera frame, mm.
    head_bone_mm: length of the Neck -> Head bone (sets the head size), mm.
    build: limb thickness factor of the subject.
    focal: mean focal length, pixels (mm at depth z -> pixels: mm * focal / z).

  Returns:
    Shapes in no particular order.
  """
  # Limbs split in pieces, each shaded and depth-sorted on its own.
  w = np.linspace(0., 1., _SUBSEGMENTS + 1)[None, :, None]  # (1, K+1, 1)
  pts = uv[_LIMB_A, None] * (1 - w) + uv[_LIMB_B, None] * w  # (L, K+1, 2)
  zs = z[_LIMB_A, None] * (1 - w[..., 0]) + z[_LIMB_B, None] * w[..., 0]  # (L, K+1)
  seg = np.stack([pts[:, :-1], pts[:, 1:]], 2).reshape(-1, 2, 2)
  seg_z = (0.5 * (zs[:, :-1] + zs[:, 1:])).reshape(-1)
  seg_r = np.repeat(_LIMB_R, _SUBSEGMENTS) * build * focal / seg_z
  seg_c = np.repeat(_LIMB_C, _SUBSEGMENTS)
  # Hands, feet; the head is a disc between the nose (the layout's Neck joint) and the
  # head top, the nose a small dark disc in front of it, hidden from behind.
  head_z = 0.5 * (z[_NOSE] + z[_TOP])
  disc = np.concatenate([uv[_BLOB_J], 0.5 * (uv[_NOSE] + uv[_TOP])[None], uv[_NOSE][None]])
  disc_z = np.concatenate([z[_BLOB_J], [head_z, z[_NOSE]]])
  disc_r = np.concatenate([_BLOB_R * build, [0.9 * head_bone_mm, 0.22 * head_bone_mm]])
  disc_r = disc_r * focal / disc_z
  disc_c = np.concatenate([_BLOB_C, [_C["skin"], _C["face"]]])
  n_seg, n_disc = len(seg), len(disc)
  points = np.zeros((n_seg + n_disc + 1, 4, 2))
  points[:n_seg, :2] = seg
  points[n_seg:n_seg + n_disc, 0] = disc
  points[-1] = uv[_POLY_J]
  return Shapes(
      points=points,
      num_points=np.array([2] * n_seg + [1] * n_disc + [4]),
      radius=np.concatenate([seg_r, disc_r, [0.]]),
      depth=np.concatenate([seg_z, disc_z, [z[_POLY_J].mean()]]),
      colour=np.concatenate([seg_c, disc_c, [_C["torso"]]]))


def person_box(shapes: Shapes) -> np.ndarray:
  """(4,) tight box [x0, y0, x1, y1] around everything drawn, pixels."""
  used = np.arange(4)[None, :] < shapes.num_points[:, None]  # (N, 4)
  r = shapes.radius[:, None, None]
  lo = np.where(used[..., None], shapes.points - r, np.inf).min((0, 1))
  hi = np.where(used[..., None], shapes.points + r, -np.inf).max((0, 1))
  return np.concatenate([lo, hi])


def square_crop(box: np.ndarray) -> np.ndarray:
  """The authors' crop: the box's short side grown to a square, same centre, no margin."""
  centre = 0.5 * (box[:2] + box[2:])
  half = 0.5 * max(box[2] - box[0], box[3] - box[1])
  return np.concatenate([centre - half, centre + half])


# ---------------------------------------------------------------------------------------
# Backgrounds.


def make_background(rng: np.random.Generator, image_size: tuple[int, int],
                    scale: float) -> np.ndarray:
  """A static scene for one camera sequence, at `scale` x the full image resolution.

  Wall gradient, a floor below a horizon, random shapes and a blurred noise texture.

  Returns:
    (round(H * scale), round(W * scale), 3) uint8 RGB.
  """
  w, h = (max(8, int(round(s * scale))) for s in image_size)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  angle = rng.uniform(0, 2 * np.pi)
  g = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
  g = (g - g.min()) / max(g.max() - g.min(), 1e-6)
  c0, c1 = rng.uniform(20, 235, (2, 3))
  img = c0 * (1 - g) + c1 * g
  horizon = rng.uniform(0.4, 0.7) * h
  floor = rng.uniform(20, 200, 3)
  img = np.where((yy > horizon)[..., None], 0.5 * img + 0.5 * floor, img)
  img = np.ascontiguousarray(img, np.float32)
  for _ in range(rng.integers(4, 16)):
    colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
    kind = rng.integers(4)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    size = rng.uniform(0.03, 0.25) * w
    if kind == 0:
      corner = (int(cx + size), int(cy + size * rng.uniform(0.3, 3)))
      cv2.rectangle(img, (int(cx), int(cy)), corner, colour, -1, cv2.LINE_AA)
    elif kind == 1:
      cv2.circle(img, (int(cx), int(cy)), int(size / 2), colour, -1, cv2.LINE_AA)
    elif kind == 2:
      end = (int(cx + rng.normal(0, size)), int(cy + rng.normal(0, size)))
      cv2.line(img, (int(cx), int(cy)), end, colour, max(1, int(size / 10)), cv2.LINE_AA)
    else:
      pts = (np.array([cx, cy]) + rng.normal(0, size / 2, (rng.integers(3, 6), 2)))
      cv2.fillPoly(img, [pts.astype(np.int32)], colour, cv2.LINE_AA)
  sigma = rng.uniform(0.5, 4.)
  noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 1)).astype(np.float32), (0, 0), sigma)
  noise = noise.reshape(h, w, 1) / max(noise.std(), 1e-6)
  img = img + rng.uniform(3, 18) * noise
  return np.clip(img, 0, 255).astype(np.uint8)


def _crop_background(canvas, scale, crop_box, size):
  # Output pixel j spans crop coordinates [j, j + 1] (edge convention), so its centre
  # j + 0.5 shows full-image point x0 + (j + 0.5) * side / S; cv2 indexes pixel centres,
  # hence the -0.5 on the canvas side.
  a = (crop_box[2] - crop_box[0]) / size * scale
  b = (crop_box[:2] + 0.5 * a / scale) * scale - 0.5
  m = np.array([[a, 0., b[0]], [0., a, b[1]]])
  return cv2.warpAffine(canvas, m, (size, size),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REFLECT_101)


def render(canvas: np.ndarray, canvas_scale: float, crop_box: np.ndarray, size: int,
           shapes: Shapes, appearance: Appearance, z_ref: float,
           draw_person: bool = True) -> np.ndarray:
  """Renders one frame straight into its square crop.

  Args:
    canvas: the sequence's background (make_background).
    canvas_scale: canvas pixels per full-image pixel.
    crop_box: (4,) square crop [x0, y0, x1, y1], full-image pixels.
    size: S, output side in pixels.
    shapes: body_shapes of this frame.
    appearance: colours.
    z_ref: depth with neutral shading (the root's), mm; nearer is brighter.
    draw_person: False gives the background alone (for tests).

  Returns:
    (S, S, 3) uint8 RGB.
  """
  img = _crop_background(canvas, canvas_scale, crop_box, size)
  if not draw_person:
    return img
  to_crop = size / (crop_box[2] - crop_box[0])
  order = np.argsort(-shapes.depth, kind="stable")  # Painter's algorithm: far first.
  shade = np.clip(1. + 0.5 * (z_ref - shapes.depth) / 700., 0.45, 1.35)
  colours = np.clip(appearance.colours[shapes.colour] * shade[:, None], 0, 255)
  # Crop coordinates use the edge convention (pixel j spans [j, j + 1]); cv2 draws in
  # pixel-centre coordinates, half a pixel less.
  crop_xy = (shapes.points - crop_box[:2]) * to_crop - 0.5
  pts = np.round(crop_xy * (1 << _SHIFT)).astype(np.int32)
  radius = shapes.radius * to_crop
  disc_r = np.round(radius * (1 << _SHIFT)).astype(int).tolist()
  width = np.maximum(1, np.round(2 * radius)).astype(int).tolist()
  colours, n_pts, pts_list = colours.tolist(), shapes.num_points.tolist(), pts.tolist()
  for i in order.tolist():
    n, colour, p = n_pts[i], colours[i], pts_list[i]
    if n == 1:
      cv2.circle(img, p[0], disc_r[i], colour, -1, cv2.LINE_AA, _SHIFT)
    elif n == 2:
      cv2.line(img, p[0], p[1], colour, width[i], cv2.LINE_AA, _SHIFT)
    else:
      cv2.fillPoly(img, [pts[i]], colour, cv2.LINE_AA, _SHIFT)
  return img


# ---------------------------------------------------------------------------------------
# Occluders: things passing between the camera and the person.


@dataclasses.dataclass(frozen=True)
class Occluder:
  """A bar or disc crossing the crop in front of the person, in crop units (side = 1).

  It moves on a straight line at constant speed, so a body part it hides in one frame
  was visible a few frames earlier: what makes temporal context worth having.

  Attributes:
    disc: a disc (else a bar, perpendicular to its motion and longer than the crop).
    centre: (2,) where it passes at frame `when`, crop units from the top-left corner.
    velocity: (2,) crop units per frame.
    when: the frame at which it is at `centre`.
    half_width: half the bar's width or the disc's radius, crop units.
    colour: (3,) RGB in [0, 255].
  """
  disc: bool
  centre: np.ndarray
  velocity: np.ndarray
  when: float
  half_width: float
  colour: np.ndarray


def sample_occluders(rng: np.random.Generator, count: int,
                     num_frames: int) -> list[Occluder]:
  """`count` occluders, each crossing the crop once within the sequence.

  Each passes near the crop's centre (within 0.2) at a random frame, at a speed that
  crosses the crop in 8-20 frames (0.8-2 s at 10 fps). Bars are 0.08-0.15 of the crop
  wide (a point one passes stays hidden for 1-3 frames), discs 0.16-0.28 across.
  """
  out = []
  for _ in range(count):
    heading = rng.uniform(0, 2 * np.pi)
    speed = 1. / rng.uniform(8., 20.)
    disc = bool(rng.random() < 0.3)
    out.append(Occluder(
        disc=disc,
        centre=0.5 + rng.uniform(-0.2, 0.2, 2),
        velocity=speed * np.array([np.cos(heading), np.sin(heading)]),
        when=float(rng.uniform(0, num_frames - 1)),
        half_width=float(rng.uniform(0.04, 0.075)) * (2. if disc else 1.),
        colour=rng.uniform(0, 255, 3)))
  return out


def draw_occluders(img: np.ndarray, occluders: list[Occluder], frame: int) -> np.ndarray:
  """Draws the occluders at `frame` over an (S, S, 3) uint8 crop, in place; returns it."""
  size = img.shape[0]
  scale = size * (1 << _SHIFT)
  for occ in occluders:
    centre = occ.centre + occ.velocity * (frame - occ.when)
    colour = occ.colour.tolist()
    if occ.disc:
      radius = int(round(occ.half_width * scale))
      cv2.circle(img, _fixed(centre, scale), radius, colour, -1, cv2.LINE_AA, _SHIFT)
    else:  # A bar across the whole crop, perpendicular to the motion.
      along = np.array([-occ.velocity[1], occ.velocity[0]])
      along *= 1.5 / np.linalg.norm(along)
      width = max(1, int(round(2 * occ.half_width * size)))
      cv2.line(img, _fixed(centre - along, scale), _fixed(centre + along, scale), colour,
               width, cv2.LINE_AA, _SHIFT)
  return img


def _fixed(point: np.ndarray, scale: float) -> tuple[int, int]:
  """Crop units -> cv2 fixed-point pixel centres (edge convention: half a pixel less)."""
  x, y = np.round(point * scale - 0.5 * (1 << _SHIFT)).astype(int).tolist()
  return x, y
