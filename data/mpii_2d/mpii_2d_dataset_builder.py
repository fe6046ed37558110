"""mpii_2d: MPII Human Pose person crops with 16 2D joints, for pretraining the 2D trunk.

One example per annotated person: a square crop around the person (the crop of the
HRNet / simple-baselines code, README.md beside this file), the 16 joints in pixels of
the stored crop (rpsm_jax.joints.MPII_JOINTS) and which of them are annotated. Heatmap
targets are computed from these by `rpsm_jax.training.heatmaps.heatmaps`, not stored. Splits
'train' and 'validation' are those codebases' annot/train.json and annot/valid.json.
Writes array_record and needs no TensorFlow.
"""

import dataclasses
import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from . import annotations
from . import examples

try:
  from data._builder_tools import builders
except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
  from _builder_tools import builders

_WORKERS_ENV = "MPII_2D_WORKERS"  # Overrides the config's worker processes (0: none).


@dataclasses.dataclass
class Mpii2dConfig(tfds.core.BuilderConfig):
  """How to crop and store the persons.

  Attributes:
    image_size: S, side of the stored square crops, pixels.
    jpeg_quality: JPEG quality of the stored crops.
    margin: crop side = 200 * scale * margin pixels (those codebases: 1.25).
    shift: the crop centre moves down by shift * scale pixels (those codebases: 15).
    examples_per_shard: persons per array_record shard (and per worker task).
    num_workers: worker processes; 0: one per available CPU core. The environment
      variable MPII_2D_WORKERS overrides it (0 there: in-process).
  """
  image_size: int = 368
  jpeg_quality: int = 95
  margin: float = 1.25
  shift: float = 15.0
  examples_per_shard: int = 1024
  num_workers: int = 0


class Builder(builders.BuilderMixin, tfds.core.ShardBasedBuilder):
  """MPII Human Pose person crops and 16 2D joints."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download the MPII Human Pose images (mpii_human_pose_v1.tar.gz) from the dataset's
  website and the JSON annotations train.json and valid.json of the HRNet /
  simple-baselines code (their README links them). Arrange the manual dir as

    images/015601864.jpg ...
    annot/train.json
    annot/valid.json

  then build with --manual_dir=<that folder> (data/mpii_2d/README.md).
  """
  BUILDER_CONFIGS = [
      Mpii2dConfig(name="crop368", description="368 px crops: the paper's input size."),
      Mpii2dConfig(name="crop256", description="256 px crops.", image_size=256),
      Mpii2dConfig(name="crop184", description="184 px crops.", image_size=184),
      Mpii2dConfig(name="crop128", description="128 px crops (CPU configs).",
                   image_size=128),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "crop368"

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    n = annotations.NUM_JOINTS
    tensor = builders.tensor
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(s, s, 3), encoding_format="jpeg",
                doc="RGB square crop around the person (crop_box), S x S."),
            "joints_2d": tensor((n, 2), np.float32,
                                "16 joints (joints.MPII_JOINTS), pixels of the stored "
                                "crop, edge convention; 0 where not visible."),
            "visible": tensor((n,), np.bool_, "The joint is annotated (joints_vis)."),
            "center": tensor((2,), np.float32,
                             "Crop centre (annotated centre moved down by shift * "
                             "scale), full-image pixels."),
            "scale": tensor((), np.float32, "Annotated person height / 200 px."),
            "box": tensor((4,), np.float32,
                          "Square [x0, y0, x1, y1] of side 200 * scale * margin about "
                          "center, full-image pixels."),
            "crop_box": tensor((4,), np.float32,
                               "box widened to whole pixels: what was cut (zero padded "
                               "beyond the image), full-image pixels."),
            "image_name": tfds.features.Text(doc="The release's image file name."),
            "image_size": tensor((2,), np.int32, "Full image [width, height], pixels."),
            "annotation_index": tensor((), np.int32, "Entry in the split's JSON list."),
        }),
        supervised_keys=None,
        homepage="http://human-pose.mpi-inf.mpg.de/",
        metadata=tfds.core.MetadataDict(),
    )

  def _options(self) -> examples.Options:
    cfg = self.builder_config
    if (cfg.image_size < 1 or not 0 <= cfg.jpeg_quality <= 100 or cfg.margin <= 0
        or cfg.examples_per_shard < 1):
      raise ValueError(f"mpii_2d config {cfg.name!r}: image_size ({cfg.image_size}), "
                       f"margin ({cfg.margin}) and examples_per_shard "
                       f"({cfg.examples_per_shard}) must be positive, jpeg_quality "
                       f"({cfg.jpeg_quality}) in [0, 100]")
    return examples.Options(image_size=cfg.image_size, jpeg_quality=cfg.jpeg_quality,
                            margin=cfg.margin, shift=cfg.shift)

  def _shard_iterators_per_split(self, dl_manager: tfds.download.DownloadManager):
    """Shards of `examples_per_shard` persons; checks the JSON and images first."""
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    image_dir = manual_dir / annotations.IMAGE_DIR
    options = self._options()
    step = self.builder_config.examples_per_shard
    tasks, skipped = [], {}
    for split, name in annotations.SPLIT_FILES.items():
      path = manual_dir / name
      persons, skipped[split] = annotations.read_persons(path)
      annotations.check_images(image_dir, persons, path)
      logging.info("mpii_2d: %d persons in split %s (%d without centre or scale left "
                   "out)", len(persons), split, len(skipped[split]))
      tasks += [(split, (image_dir, persons[i:i + step], options))
                for i in range(0, len(persons), step)]
    counts = {split: 0 for split in annotations.SPLIT_FILES}

    def read(index, items):
      split = tasks[index][0]
      for person_index, example in items:
        yield f"{person_index:06d}", example
        counts[split] += 1

    def after(index, _, elapsed):
      logging.info("mpii_2d: %d/%d shards, %.1f min", index + 1, len(tasks), elapsed / 60)

    def finish():
      for name in counts:
        self.info.metadata[name] = {"examples": counts[name],
                                    "skipped_annotations": skipped[name]}

    workers = builders.num_workers(_WORKERS_ENV, self.builder_config.num_workers)
    return builders.pooled_shards(examples.task_examples, tasks, annotations.SPLIT_FILES,
                                  workers, read, after, finish)
