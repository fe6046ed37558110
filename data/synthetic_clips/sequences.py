"""Turns (seed, subject, action, take) into filmed, rendered per-frame examples.

Every random choice comes from a numpy Generator seeded by the dataset seed plus the
identity of what is drawn (subject, action, take, camera), so any sequence can be
regenerated alone, in any order or process, bit for bit.
"""

import dataclasses
from collections.abc import Iterator

import cv2
import numpy as np

from rpsm_jax import joints

from . import camera as camera_lib
from . import motion
from . import render

# Subject names: the Human3.6M protocol's (train S1, S5-S8; test S9, S11), then extra
# synthetic subjects S21, S22, ... (train) and S51, S52, ... (test) for larger configs.
_TRAIN_NUMBERS = (1, 5, 6, 7, 8) + tuple(range(21, 51))
_TEST_NUMBERS = (9, 11) + tuple(range(51, 81))

# Streams of the seed sequence, so different kinds of draws never share randomness.
_SKELETON, _APPEARANCE, _MOTION, _BACKGROUND, _LIGHT, _OCCLUDERS = range(1, 7)


def subjects(split: str, count: int) -> list[str]:
  """The first `count` subject names of 'train' or 'test'."""
  numbers = {"train": _TRAIN_NUMBERS, "test": _TEST_NUMBERS}[split]
  if count > len(numbers):
    raise ValueError(f"At most {len(numbers)} {split} subjects, asked for {count}.")
  return [f"S{n}" for n in numbers[:count]]


def subject_number(subject: str) -> int:
  return int(subject.lstrip("S"))


@dataclasses.dataclass(frozen=True)
class SequenceSpec:
  """One (subject, action, take), filmed by every camera.

  Attributes:
    seed: dataset seed.
    subject: e.g. 'S1'.
    action: one of motion.ACTIONS.
    take: sub-sequence number, 1-based (Human3.6M's 'Walking 1', 'Walking 2').
    num_frames: frames per sequence.
    fps: frame rate of the stored frames.
    image_size: S, side of the stored square crops, pixels.
    num_cameras: cameras filming it.
    jpeg_quality: JPEG quality of the stored images.
    num_occluders: things crossing each camera's view in front of the person
      (render.sample_occluders); 0 draws none and leaves every other draw unchanged.
  """
  seed: int
  subject: str
  action: str
  take: int
  num_frames: int
  fps: float
  image_size: int
  num_cameras: int
  jpeg_quality: int = 90
  num_occluders: int = 0


def _rng(seed: int, *ids: int) -> np.random.Generator:
  return np.random.default_rng([seed, *ids])


def skeleton(seed: int, subject: str) -> motion.Skeleton:
  """The subject's body: the same in every sequence of that subject."""
  return motion.sample_skeleton(_rng(seed, _SKELETON, subject_number(subject)))


def world_poses(spec: SequenceSpec) -> np.ndarray:
  """(T, 17, 3) world joint positions of the sequence, mm."""
  rng = _rng(spec.seed, _MOTION, subject_number(spec.subject),
             motion.ACTIONS.index(spec.action), spec.take)
  return motion.sample_sequence(rng, skeleton(spec.seed, spec.subject), spec.action,
                                spec.num_frames, spec.fps)


def sequence_id(spec: SequenceSpec, cam: camera_lib.Camera) -> str:
  return f"{spec.subject}/{spec.action}.{spec.take}/{cam.name}"


def film(spec: SequenceSpec, draw_person: bool = True) -> list[tuple[str, dict]]:
  """Films and renders one sequence with every camera.

  Args:
    spec: what to film.
    draw_person: False renders the backgrounds alone (for tests).

  Returns:
    (key, example) per camera and frame, cameras outer; examples follow the schema in
    data/README.md (image as JPEG bytes).
  """
  number = subject_number(spec.subject)
  body = skeleton(spec.seed, spec.subject)
  appearance = render.sample_appearance(_rng(spec.seed, _APPEARANCE, number))
  poses_world = world_poses(spec)
  size = spec.image_size
  head_bone = float(body.bone_lengths[joints.H36M_JOINTS.index("Head")])
  # A typical crop spans ~400 full-image pixels: render the background at about the
  # output resolution so it stays sharp without wasting work.
  canvas_scale = min(1., size / 400.)
  out = []
  for cam_index, cam in enumerate(camera_lib.make_rig(spec.seed, number,
                                                      spec.num_cameras)):
    ids = (number, motion.ACTIONS.index(spec.action), spec.take, cam_index)
    canvas = render.make_background(_rng(spec.seed, _BACKGROUND, *ids), cam.image_size,
                                    canvas_scale)
    light = _rng(spec.seed, _LIGHT, *ids)
    gain, bias = light.uniform(0.75, 1.2), light.uniform(-20., 20.)
    occluders = render.sample_occluders(_rng(spec.seed, _OCCLUDERS, *ids),
                                        spec.num_occluders, spec.num_frames)
    seq_id = sequence_id(spec, cam)
    poses_cam = cam.world_to_camera(poses_world)  # (T, 17, 3)
    uv = cam.project(poses_cam)
    focal = float(np.mean(cam.f))
    camera_feature = {
        "name": cam.name, "f": cam.f.astype(np.float32), "c": cam.c.astype(np.float32),
        "k": cam.k.astype(np.float32), "p": cam.p.astype(np.float32),
        "image_size": np.asarray(cam.image_size, np.int32)}
    for t in range(spec.num_frames):
      z = poses_cam[t, :, 2]
      shapes = render.body_shapes(uv[t], z, head_bone, body.build, focal)
      box = render.person_box(shapes)
      crop = render.square_crop(box)
      img = render.render(canvas, canvas_scale, crop, size, shapes, appearance,
                          z_ref=float(z[0]), draw_person=draw_person)
      render.draw_occluders(img, occluders, t)
      img = cv2.convertScaleAbs(img, alpha=gain, beta=bias)
      ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
      assert ok
      side = crop[2] - crop[0]
      out.append((f"{seq_id}/{t:05d}", {
          "image": jpeg.tobytes(),
          "pose_3d": poses_cam[t].astype(np.float32),
          "pose_2d": ((uv[t] - crop[:2]) * size / side).astype(np.float32),
          "box": box.astype(np.float32),
          "crop_box": crop.astype(np.float32),
          "camera": camera_feature,
          "subject": spec.subject,
          "action": spec.action,
          "sequence_id": seq_id,
          "frame_index": np.int32(t),
      }))
  return out


def film_items(spec: SequenceSpec) -> Iterator[tuple[str, dict]]:
  """film(spec), item by item: the worker pool's entry point (pool.OrderedPool)."""
  yield from film(spec)
