"""Tests of the mpii_2d builder on a few tiny JPEGs and JSON files in the real layout.

Each fixture person has a red square painted around its head-top joint, so the stored
crop can be checked against the stored joint positions.
"""

import json

import cv2
import numpy as np
import pytest

from data._builder_tools import testing
from rpsm_jax.training import heatmaps
from rpsm_jax import joints

from . import annotations
from . import examples
from . import mpii_2d_dataset_builder as builder_lib

_SIZE = 48
_HEAD_TOP = joints.MPII_JOINTS.index("HeadTop")
_BACKGROUND = (40, 90, 40)  # RGB green.
_MARK = (250, 40, 40)  # RGB red, around the head top.


def _person(image, center, scale, seed, invisible=()):
  rng = np.random.default_rng(seed)
  cx, cy = center
  half = 80 * scale  # Joints well inside the 250 * scale crop.
  pts = np.stack([rng.uniform(cx - half / 2, cx + half / 2, 16),
                  rng.uniform(cy - half, cy + half, 16)], axis=1).round(0)
  pts[_HEAD_TOP] = (cx, cy - half)
  vis = np.ones(16, int)
  vis[list(invisible)] = 0
  pts[list(invisible)] = -1  # Unannotated joints: as in the release, no position.
  return {"image": image, "center": [float(cx), float(cy)], "scale": scale,
          "joints": pts.tolist(), "joints_vis": vis.tolist()}


# (image, width, height), persons per split.
_IMAGES = (("000001.jpg", 160, 120), ("000002.jpg", 128, 96), ("000003.jpg", 100, 140))
_TRAIN = [
    _person("000001.jpg", (50, 60), 0.35, 0, invisible=(0, 5)),
    _person("000001.jpg", (110, 62), 0.3, 1),
    _person("000002.jpg", (64, 50), 0.32, 2),
    {"image": "000002.jpg", "center": [-1.0, -1.0], "scale": -1.0,
     "joints": [[0, 0]] * 16, "joints_vis": [0] * 16},  # No centre: left out.
    _person("000003.jpg", (20, 70), 0.4, 3),  # Crop far beyond the left edge.
]
_VALID = [_person("000003.jpg", (60, 60), 0.3, 4), _person("000001.jpg", (80, 55), 0.3, 5)]


def _write_images(root, persons):
  for name, width, height in _IMAGES:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = _BACKGROUND[::-1]  # BGR for cv2.
    for person in persons:
      if person["image"] == name and person["joints_vis"][_HEAD_TOP]:
        # MATLAB pixel k is index k - 1.
        x, y = (np.asarray(person["joints"][_HEAD_TOP]) - 1).astype(int)
        image[max(y - 4, 0):y + 5, max(x - 4, 0):x + 5] = _MARK[::-1]
    path = root / annotations.IMAGE_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])


def _write_release(root):
  _write_images(root, _TRAIN + _VALID)
  for split, persons in (("train", _TRAIN), ("validation", _VALID)):
    path = root / annotations.SPLIT_FILES[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(persons))


def _builder(data_dir, **kwargs):
  config = builder_lib.Mpii2dConfig(name="mini", image_size=_SIZE, examples_per_shard=2,
                                    num_workers=2, **kwargs)
  return builder_lib.Builder(config=config, data_dir=str(data_dir))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("mpii")
  _write_release(root)
  builder = _builder(tmp_path_factory.mktemp("tfds"))
  testing.prepare(builder, root, builder_lib._WORKERS_ENV)  # pylint: disable=protected-access
  source = builder.as_data_source()
  rows = {split: sorted((source[split][i] for i in range(len(source[split]))),
                        key=lambda r: int(r["annotation_index"]))
          for split in ("train", "validation")}
  return builder, rows


def test_splits_and_skipped_entries(built):
  builder, rows = built
  assert builder.name == "mpii_2d"
  assert [int(r["annotation_index"]) for r in rows["train"]] == [0, 1, 2, 4]
  assert [int(r["annotation_index"]) for r in rows["validation"]] == [0, 1]
  assert builder.info.metadata["train"] == {"examples": 4, "skipped_annotations": [3]}
  assert builder.info.metadata["validation"]["examples"] == 2


def test_crop_geometry_and_joints(built):
  _, rows = built
  for split, persons in (("train", _TRAIN), ("validation", _VALID)):
    for r in rows[split]:
      person = persons[int(r["annotation_index"])]
      scale = person["scale"]
      assert r["image"].shape == (_SIZE, _SIZE, 3)
      # Centre: MATLAB -> edge pixels (-0.5), moved down by 15 * scale; side 250 * scale.
      center = np.asarray(person["center"]) + [-0.5, 15 * scale - 0.5]
      np.testing.assert_allclose(r["center"], center, atol=1e-4)
      np.testing.assert_allclose(r["box"], np.concatenate(
          [center - 125 * scale, center + 125 * scale]), atol=1e-4)
      crop_box = r["crop_box"].astype(np.float64)
      side = crop_box[2] - crop_box[0]
      assert side == crop_box[3] - crop_box[1]
      assert np.all(crop_box[:2] <= r["box"][:2]) and np.all(crop_box[2:] >= r["box"][2:])
      assert side - 250 * scale < 2
      visible = np.asarray(person["joints_vis"]) > 0
      np.testing.assert_array_equal(r["visible"], visible)
      assert r["visible"].dtype == bool
      full = r["joints_2d"] * side / _SIZE + crop_box[:2]
      np.testing.assert_allclose(full[visible], np.asarray(person["joints"])[visible] - 0.5,
                                 atol=1e-3)
      assert not r["joints_2d"][~visible].any()
      assert _text(r["image_name"]) == person["image"]


def test_crop_shows_the_head_top_where_the_joint_says(built):
  _, rows = built
  for r in rows["train"] + rows["validation"]:
    x, y = np.floor(r["joints_2d"][_HEAD_TOP]).astype(int)
    red, green, blue = r["image"][y, x].astype(int)
    assert red > 180 and green < 110 and blue < 110, (r["image_name"], red, green, blue)
    # The heatmap target of the head top peaks in the cell holding it.
    maps = heatmaps.heatmaps(r["joints_2d"], r["visible"], _SIZE, sigma=3.0)
    row, col = np.unravel_index(np.argmax(maps[..., _HEAD_TOP]), maps.shape[:2])
    centre = (np.array([col, row]) + 0.5) * 8
    assert np.all(np.abs(centre - r["joints_2d"][_HEAD_TOP]) <= 4)


def test_crop_beyond_the_image_is_zero_padded(built):
  _, rows = built
  r = next(r for r in rows["train"] if int(r["annotation_index"]) == 4)
  assert r["crop_box"][0] < 0
  left = int(-r["crop_box"][0] * _SIZE / (r["crop_box"][2] - r["crop_box"][0]))
  assert left >= 2 and r["image"][:, :left - 1].max() < 10
  np.testing.assert_array_equal(r["image_size"], [100, 140])


def test_errors_name_files(tmp_path):
  with pytest.raises(annotations.AnnotationError, match=r"missing annotation file .*x.json"):
    annotations.read_persons(tmp_path / "x.json")
  (tmp_path / "bad.json").write_text("[{")
  with pytest.raises(annotations.AnnotationError, match=r"bad.json: unreadable JSON"):
    annotations.read_persons(tmp_path / "bad.json")
  entry = _person("a.jpg", (10, 10), 0.2, 0)
  (tmp_path / "short.json").write_text(json.dumps([entry, dict(entry, joints=[[1, 2]])]))
  with pytest.raises(annotations.AnnotationError, match=r"short.json: entry 1: expected"):
    annotations.read_persons(tmp_path / "short.json")
  del entry["scale"]
  (tmp_path / "noscale.json").write_text(json.dumps([entry]))
  with pytest.raises(annotations.AnnotationError, match=r"noscale.json: entry 0: missing"):
    annotations.read_persons(tmp_path / "noscale.json")
  _write_release(tmp_path)
  (tmp_path / "images" / "000002.jpg").unlink()
  persons, _ = annotations.read_persons(tmp_path / annotations.SPLIT_FILES["train"])
  with pytest.raises(annotations.AnnotationError,
                     match=r"missing image .*images/000002.jpg \(1 of the 3 images"):
    annotations.check_images(tmp_path / "images", persons, tmp_path / "annot/train.json")
  (tmp_path / "images" / "000002.jpg").write_bytes(b"not a jpeg")
  options = examples.Options(image_size=_SIZE, jpeg_quality=90, margin=1.25, shift=15)
  with pytest.raises(annotations.AnnotationError,
                     match=r"000002.jpg: missing or undecodable image"):
    list(examples.person_examples(tmp_path / "images", persons, options))


def test_failed_build_leaves_no_dataset(tmp_path, monkeypatch):
  monkeypatch.setenv(builder_lib._WORKERS_ENV, "0")  # pylint: disable=protected-access
  _write_release(tmp_path / "mpii")
  (tmp_path / "mpii" / "images" / "000003.jpg").write_bytes(b"damaged")
  builder = _builder(tmp_path / "tfds")
  with pytest.raises(annotations.AnnotationError, match="000003.jpg"):
    testing.prepare(builder, tmp_path / "mpii")
  assert not builder.is_prepared()
  config_dir = tmp_path / "tfds" / "mpii_2d" / "mini"
  assert not (config_dir / "1.0.0").exists()
  assert not [p for p in config_dir.iterdir() if "incomplete" in p.name]


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)
