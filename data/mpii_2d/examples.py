"""Examples of a run of MPII persons: crops and joints in crop pixels.

Runs in worker processes: imports neither TensorFlow nor tensorflow_datasets. Persons of
one image are consecutive in the JSON files, so the last decoded image is reused.
"""

import dataclasses
import pathlib
from collections.abc import Generator

import cv2
import numpy as np

from . import annotations

try:
  from data._builder_tools import crops
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import crops


@dataclasses.dataclass(frozen=True)
class Options:
  """How examples are made (from the builder config).

  Attributes:
    image_size: S, side of the stored crops, pixels.
    jpeg_quality: JPEG quality of the stored crops.
    margin: crop side = 200 * scale * margin pixels.
    shift: the crop centre moves down by shift * scale pixels.
  """
  image_size: int
  jpeg_quality: int
  margin: float
  shift: float


def person_examples(
    image_dir: pathlib.Path, persons: list[annotations.Person], options: Options
) -> Generator[tuple[int, dict], None, int]:
  """Yields (annotation index, example) per person; returns the number written.

  Raises:
    AnnotationError: an image is missing or cannot be decoded (named).
  """
  name, image = None, None
  size = options.image_size
  for person in persons:
    if person.image != name:
      path = image_dir / person.image
      image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, as imencode wants.
      if image is None:
        raise annotations.AnnotationError(f"{path}: missing or undecodable image")
      name = person.image
    center, box = annotations.crop_square(person, options.margin, options.shift)
    jpeg, crop_box, scale = crops.jpeg_crop(image, box, size, options.jpeg_quality, name)
    joints = (annotations.joints_edge_px(person) - crop_box[:2]) * scale
    joints[~person.visible] = 0.0  # Unannotated joints carry no position.
    yield person.index, {
        "image": jpeg,
        "joints_2d": joints.astype(np.float32),
        "visible": person.visible.copy(),
        "center": center.astype(np.float32),
        "scale": np.float32(person.scale),
        "box": box.astype(np.float32),
        "crop_box": crop_box.astype(np.float32),
        "image_name": person.image,
        "image_size": np.array([image.shape[1], image.shape[0]], np.int32),
        "annotation_index": np.int32(person.index),
    }
  return len(persons)


def task_examples(task):
  """person_examples(*task): the pool's worker entry point."""
  return (yield from person_examples(*task))
