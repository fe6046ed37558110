"""MPII Human Pose as the HRNet / simple-baselines JSON files describe it, and its crops.

Manual dir layout:

  images/<name>.jpg   the release's images
  annot/train.json    the training persons
  annot/valid.json    the validation persons (the split those codebases evaluate on)

Each JSON file is a list with one entry per annotated person:
  image       image file name, e.g. '015601864.jpg'
  center      [x, y] rough person centre, MATLAB pixels (1-based: the top-left pixel's
              centre is (1, 1))
  scale       person height / 200 px
  joints      16 [x, y], MATLAB pixels, in the order of rpsm_jax.joints.MPII_JOINTS
  joints_vis  16 flags, 1 where the joint is annotated

The crop is theirs: centre moved down by 15 * scale px, side 200 * scale * 1.25 px.
"""

import dataclasses
import json
import pathlib

import numpy as np

NUM_JOINTS = 16
IMAGE_DIR = "images"
SPLIT_FILES = {"train": "annot/train.json", "validation": "annot/valid.json"}
# HRNet / simple-baselines: the person box is 200 px per unit of `scale`.
PIXELS_PER_SCALE = 200.0
# MATLAB's pixel k (1-based) covers [k - 1, k] in our edge convention: centre k - 0.5.
_MATLAB_TO_EDGE_PX = -0.5


class AnnotationError(RuntimeError):
  """A JSON file or image is missing, unreadable or malformed."""


@dataclasses.dataclass(frozen=True)
class Person:
  """One annotated person.

  Attributes:
    index: position in its JSON list (unique within a split).
    image: image file name.
    center: (2,) the JSON's centre, MATLAB pixels.
    scale: the JSON's scale (person height / 200 px).
    joints: (16, 2) MATLAB pixels.
    visible: (16,) bool, joints_vis > 0.
  """
  index: int
  image: str
  center: np.ndarray
  scale: float
  joints: np.ndarray
  visible: np.ndarray


def read_persons(path: pathlib.Path) -> tuple[list[Person], list[int]]:
  """Reads and checks one JSON file.

  Returns:
    The persons that can be cropped, and the indices of entries left out because they
    have no centre (centre x == -1, as those codebases mark it) or no positive scale.

  Raises:
    AnnotationError: naming the file (and the entry) when it is missing, not JSON, or
      an entry lacks a field or has a wrongly shaped one.
  """
  if not path.is_file():
    raise AnnotationError(f"missing annotation file {path}")
  try:
    entries = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise AnnotationError(f"{path}: unreadable JSON ({e})") from e
  if not isinstance(entries, list) or not entries:
    raise AnnotationError(f"{path}: expected a non-empty list of person entries")
  persons, skipped = [], []
  for index, entry in enumerate(entries):
    try:
      image = entry["image"]
      center = np.asarray(entry["center"], np.float64)
      scale = float(entry["scale"])
      joints = np.asarray(entry["joints"], np.float64)
      visible = np.asarray(entry["joints_vis"]).reshape(-1) > 0
    except (KeyError, TypeError, ValueError) as e:
      raise AnnotationError(f"{path}: entry {index}: missing or malformed field "
                            f"({type(e).__name__}: {e})") from e
    if (not isinstance(image, str) or not image or center.shape != (2,)
        or joints.shape != (NUM_JOINTS, 2) or visible.shape != (NUM_JOINTS,)):
      raise AnnotationError(
          f"{path}: entry {index}: expected 'image' a file name, 'center' (2,), "
          f"'joints' (16, 2), 'joints_vis' (16,); got {image!r}, {center.shape}, "
          f"{joints.shape}, {visible.shape}")
    if center[0] == -1 or not scale > 0 or not np.all(np.isfinite(center)):
      skipped.append(index)
      continue
    persons.append(Person(index, image, center, scale, joints, visible))
  return persons, skipped


def check_images(image_dir: pathlib.Path, persons: list[Person], source: pathlib.Path):
  """Fails fast, naming the first missing image and how many are missing."""
  names = sorted({p.image for p in persons})
  missing = [n for n in names if not (image_dir / n).is_file()]
  if missing:
    raise AnnotationError(f"missing image {image_dir / missing[0]} ({len(missing)} of the "
                          f"{len(names)} images that {source} names are missing)")


def crop_square(person: Person, margin: float = 1.25,
                shift: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
  """The HRNet / simple-baselines crop of a person, in our pixel convention.

  Args:
    person: the annotation.
    margin: side = PIXELS_PER_SCALE * scale * margin.
    shift: the centre moves down by shift * scale pixels ("to avoid cropping limbs").

  Returns:
    center: (2,) the shifted centre, full-image pixels, edge convention.
    box: (4,) float [x0, y0, x1, y1], the square about it.
  """
  center = person.center + _MATLAB_TO_EDGE_PX + np.array([0.0, shift * person.scale])
  half = PIXELS_PER_SCALE * person.scale * margin / 2
  return center, np.concatenate([center - half, center + half])


def joints_edge_px(person: Person) -> np.ndarray:
  """(16, 2) joints in full-image pixels, edge convention."""
  return person.joints + _MATLAB_TO_EDGE_PX
