"""Tests of the h36m_clips builder on a miniature release written in the official layout.

The miniature: 96 x 88 px videos (a few frames more than the poses) whose person is a
bright rectangle with a per-frame brightness, poses of 32 joints seen by a small fake
camera with the devkit's distortion, MATLAB v7.3 box masks (some missing, renamed,
damaged or empty), and 2D pose files for a cross-check.
"""

import logging
import multiprocessing
import os
import pathlib

import cdflib.cdfwrite
import cv2
import h5py
import numpy as np
import pytest

from data._builder_tools import crops
from data._builder_tools import testing
from rpsm_jax import joints

from . import cameras
from . import examples
from . import h36m_clips_dataset_builder as builder_lib
from . import release

_W, _H = 96, 88  # Non-square, to catch width/height swaps.
_CAMERA = cameras.Intrinsics(f=(90.0, 92.0), c=(47.0, 43.5),
                             k=(-0.21, 0.25, -0.003), p=(-0.0014, -0.001),
                             image_size=(_W, _H))
_NUM_POSES = 11
_EXTRA_VIDEO_FRAMES = 2
_STEP = 2
_SIZE = 48
_BACKGROUND = 30  # Grey background; the person is yellowish, brighter each frame.

# (subject, release action, camera, box file: 'ok' | 'missing' | 'damaged' |
#  'renamed:<name>' | 'empty:<frame>', with a 2D pose file).
_SEQUENCES = (
    ("S1", "Directions 1", "54138969", "ok", True),
    ("S1", "Directions 1", "55011271", "ok", False),
    ("S1", "WalkingDog 1", "54138969", "renamed:WalkDog 1", True),
    ("S1", "TakingPhoto", "58860488", "missing", True),
    ("S5", "Greeting", "60457274", "damaged", True),
    ("S9", "Phoning 1", "54138969", "empty:4", True),
    ("S11", "Directions", "54138969", "ok", True),  # Skipped by default.
    ("S11", "Phoning 3", "55011271", "ok", True),
)


# (sequence_id, frame) whose box cannot come from a mask.
_FALLBACK_FRAMES = (
    {("S1/TakingPhoto/58860488", i) for i in range(0, _NUM_POSES, _STEP)}
    | {("S5/Greeting/60457274", i) for i in range(0, _NUM_POSES, _STEP)}
    | {("S9/Phoning 1/54138969", 4)})


def _devkit_project(points, cam):
  """The devkit's projection written per coordinate, independently of cameras.py."""
  x = points[..., 0] / points[..., 2]
  y = points[..., 1] / points[..., 2]
  k1, k2, k3 = cam.k
  p1, p2 = cam.p
  r2 = x * x + y * y
  radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
  tan = p1 * y + p2 * x
  u = cam.f[0] * (x * (radial + tan) + p2 * r2) + cam.c[0]
  v = cam.f[1] * (y * (radial + tan) + p1 * r2) + cam.c[1]
  return np.stack([u, v], axis=-1)


def _brightness(frame_index):
  return 60 + 14 * frame_index


def _poses(seed):
  """(N, 32, 3) camera mm: a 1.6 m x 0.9 m figure walking sideways at ~4 m depth."""
  rng = np.random.default_rng(seed)
  body = rng.uniform([-450, -800, -150], [450, 800, 150], (32, 3))
  t = np.arange(_NUM_POSES)[:, None, None]
  return body + np.array([-300.0 + 40 * seed, 100, 4000]) + t * np.array([25, 0, 0])


def _write_cdf(path, pose):
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = cdflib.cdfwrite.CDF(str(path), delete=True)
  writer.write_var({"Variable": "Pose", "Data_Type": writer.CDF_FLOAT,
                    "Num_Elements": 1, "Rec_Vary": True,
                    "Dim_Sizes": list(pose.shape)}, var_data=pose[None])
  writer.close()


def _mask_box(pose_px):
  lo = np.floor(pose_px.min(axis=0)).astype(int) - 2
  hi = np.ceil(pose_px.max(axis=0)).astype(int) + 2
  return np.array([max(lo[0], 0), max(lo[1], 0), min(hi[0], _W), min(hi[1], _H)])


def _write_masks(path, boxes, empty_frame=None):
  """A MATLAB v7.3 file: 'Masks' (N, 1) references to (W, H) uint8 masks."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w", userblock_size=512) as f:
    group = f.create_group("#refs#")
    refs = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
      mask = np.zeros((_H, _W), np.uint8)
      if i != empty_frame:
        mask[y0:y1, x0:x1] = 1
      refs.append(group.create_dataset(f"m{i}", data=mask.T).ref)  # Column-major.
    masks = f.create_dataset("Masks", (len(refs), 1), dtype=h5py.ref_dtype)
    for i, ref in enumerate(refs):
      masks[i, 0] = ref
  with open(path, "r+b") as f:
    f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64")


def _write_video(path, boxes, num_frames):
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 50, (_W, _H))
  for i in range(num_frames):
    frame = np.full((_H, _W, 3), _BACKGROUND, np.uint8)
    x0, y0, x1, y1 = boxes[min(i, len(boxes) - 1)]
    frame[y0:y1, x0:x1] = _brightness(i)
    frame[y0:y1, x0:x1, 0] = _brightness(i) // 2  # Less blue: BGR order shows.
    writer.write(frame)
  writer.release()


def _write_sequence(root, seed, subject, action, camera, box_file, with_2d,
                    num_video_frames=_NUM_POSES + _EXTRA_VIDEO_FRAMES):
  stem = f"{action}.{camera}"
  sub = root / subject
  pose = _poses(seed)
  pose_px = _devkit_project(pose, _CAMERA)
  boxes = [_mask_box(p) for p in pose_px]
  boxes += [boxes[-1]] * _EXTRA_VIDEO_FRAMES  # Masks follow the video's frames.
  _write_cdf(sub / release.POSE_3D_DIR / f"{stem}.cdf", pose.reshape(_NUM_POSES, 96))
  if with_2d:
    _write_cdf(sub / release.POSE_2D_DIR / f"{stem}.cdf",
               pose_px.reshape(_NUM_POSES, 64))
  _write_video(sub / release.VIDEO_DIR / f"{stem}.mp4", boxes, num_video_frames)
  mat = sub / release.BOX_DIR / f"{stem}.mat"
  kind, _, arg = box_file.partition(":")
  if kind == "renamed":
    _write_masks(mat.with_name(f"{arg}.{camera}.mat"), boxes)
  elif kind == "damaged":
    mat.parent.mkdir(parents=True, exist_ok=True)
    mat.write_bytes(b"MATLAB 7.3 MAT-file" + bytes(100))
  elif kind == "empty":
    _write_masks(mat, boxes, empty_frame=int(arg))
  elif kind == "ok":
    _write_masks(mat, boxes)
  return pose, pose_px, boxes


def _write_release(root):
  truth = {}
  for seed, (subject, action, camera, box_file, with_2d) in enumerate(_SEQUENCES):
    truth[f"{subject}/{action}/{camera}"] = _write_sequence(
        root, seed, subject, action, camera, box_file, with_2d)
  # Not an action: the builder must ignore it.
  _write_cdf(root / "S1" / release.POSE_3D_DIR / "_ALL.54138969.cdf",
             _poses(0).reshape(_NUM_POSES, 96))
  return truth


def _config(**kwargs):
  defaults = dict(name="mini", image_size=_SIZE, frame_step=_STEP,
                  train_subjects=("S1", "S5"), test_subjects=("S9", "S11"),
                  cameras={serial: _CAMERA for serial in release.CAMERA_SERIALS},
                  num_workers=2)
  defaults.update(kwargs)
  return builder_lib.H36mClipsConfig(**defaults)


def _builder(data_dir, **kwargs):
  return builder_lib.Builder(config=_config(**kwargs), data_dir=str(data_dir))


class _Records(logging.Handler):
  """Collects the formatted messages logged while attached."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def build(tmp_path_factory):
  """The miniature release, built once with 2 worker processes, and the build log."""
  root = tmp_path_factory.mktemp("release")
  truth = _write_release(root)
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = _builder(data_dir)
  records, absl_logger = _Records(), logging.getLogger("absl")
  absl_logger.addHandler(records)
  level = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  try:
    testing.prepare(builder, root, builder_lib._WORKERS_ENV)  # pylint: disable=protected-access
  finally:
    absl_logger.removeHandler(records)
    absl_logger.setLevel(level)
  source = builder.as_data_source()
  rows = {split: [source[split][i] for i in range(len(source[split]))]
          for split in ("train", "test")}
  return builder, rows, truth, root, records.messages


@pytest.fixture(scope="module")
def built(build):
  """(builder, rows per split, truth per sequence, release folder)."""
  return build[:4]


@pytest.fixture(scope="module")
def build_log(build):
  """The messages the parent process logged during the build."""
  return build[4]


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def test_action_names_map_to_the_15_canonical_actions():
  assert release.canonical_action("WalkingDog 1") == "WalkDog"
  assert release.canonical_action("WalkDog") == "WalkDog"
  assert release.canonical_action("TakingPhoto") == "Photo"
  assert release.canonical_action("Photo 1") == "Photo"
  assert release.canonical_action("Directions") == "Directions"
  assert release.canonical_action("Phoning 3") == "Phoning"
  assert release.split_action("SittingDown 2") == ("SittingDown", "2")
  assert {release.canonical_action(a) for a in joints.H36M_ACTIONS} == set(
      joints.H36M_ACTIONS)
  with pytest.raises(ValueError, match="Dancing"):
    release.canonical_action("Dancing 1")


def test_projection_is_the_devkit_formula():
  points = np.random.default_rng(0).uniform([-2000, -2000, 2000], [2000, 2000, 6000],
                                            (50, 3))
  for intrinsics in cameras.H36M_CAMERAS.values():
    np.testing.assert_allclose(cameras.project(points, intrinsics),
                               _devkit_project(points, intrinsics), atol=1e-9)
  # The published principal points lie near the middle of the ~1000 px images.
  for intrinsics in cameras.H36M_CAMERAS.values():
    assert np.all(np.abs(np.asarray(intrinsics.c) - 500) < 25)


def test_square_crop_is_centred_and_exact():
  crop_box = crops.square_crop_box(np.array([10.0, 20.0, 30.0, 60.0]))
  np.testing.assert_array_equal(crop_box, [0, 20, 40, 60])
  image = np.zeros((50, 50, 3), np.uint8)
  image[25:30, 5:10] = 255  # A 5 x 5 square, partly under the padding below.
  out = crops.crop_and_resize(image, np.array([-10, 10, 30, 50]), 20)
  assert out.shape == (20, 20, 3)
  # Full-image [5, 10) x [25, 30) -> crop [(5 + 10) / 2, (10 + 10) / 2) = [7.5, 10).
  assert out[8, 8:10].min() > 100 and out[:, :7].max() == 0


def test_splits_subjects_and_skips(built):
  builder, rows, _, _ = built
  assert builder.name == "h36m_clips"
  subjects = {split: {_text(r["subject"]) for r in rs} for split, rs in rows.items()}
  assert subjects == {"train": {"S1", "S5"}, "test": {"S9", "S11"}}
  ids = {_text(r["sequence_id"]) for rs in rows.values() for r in rs}
  assert "S11/Directions/54138969" not in ids  # Skipped (corrupt in the release).
  assert "S11/Phoning 3/55011271" in ids
  assert len(ids) == len(_SEQUENCES) - 1


def test_frames_are_subsampled_in_order(built):
  _, rows, _, _ = built
  by_sequence = {}
  for r in rows["train"] + rows["test"]:
    by_sequence.setdefault(_text(r["sequence_id"]), []).append(int(r["frame_index"]))
  for frames in by_sequence.values():
    # Frames with poses only (the videos hold 2 more), every 2nd, in order.
    assert frames == list(range(0, _NUM_POSES, _STEP))


def test_actions_are_canonical(built):
  _, rows, _, _ = built
  actions = {_text(r["sequence_id"]): _text(r["action"])
             for rs in rows.values() for r in rs}
  assert actions["S1/WalkingDog 1/54138969"] == "WalkDog"
  assert actions["S1/TakingPhoto/58860488"] == "Photo"
  assert actions["S11/Phoning 3/55011271"] == "Phoning"
  assert set(actions.values()) <= set(joints.H36M_ACTIONS)


def test_features_and_projection(built):
  _, rows, truth, _ = built
  for r in rows["train"] + rows["test"]:
    pose, pose_px, _ = truth[_text(r["sequence_id"])]
    i = int(r["frame_index"])
    assert r["image"].shape == (_SIZE, _SIZE, 3) and r["image"].dtype == np.uint8
    np.testing.assert_allclose(r["pose_3d"], pose[i, list(joints.H36M_FROM_32)],
                               atol=0.01)  # float32 CDF.
    crop_box = r["crop_box"].astype(np.float64)
    side = crop_box[2] - crop_box[0]
    assert side == crop_box[3] - crop_box[1] and side > 0  # Square.
    full = r["pose_2d"] * side / _SIZE + crop_box[:2]
    # 3D joints projected with the intrinsics land on the 2D joints.
    expected = _devkit_project(pose[i, list(joints.H36M_FROM_32)], _CAMERA)
    np.testing.assert_allclose(full, expected, atol=1.0)
    np.testing.assert_allclose(full, pose_px[i, list(joints.H36M_FROM_32)], atol=1.0)
    camera = r["camera"]
    np.testing.assert_allclose(camera["f"], _CAMERA.f)
    np.testing.assert_allclose(camera["p"], _CAMERA.p, rtol=1e-6)
    np.testing.assert_array_equal(camera["image_size"], [_W, _H])


def test_crop_holds_the_right_frame_and_person(built):
  _, rows, truth, _ = built
  for r in rows["train"] + rows["test"]:
    sequence_id = _text(r["sequence_id"])
    i = int(r["frame_index"])
    x0, y0, x1, y1 = truth[sequence_id][2][i]  # The painted person rectangle.
    box = r["box"]
    crop_box = r["crop_box"]
    # The box holds the person and the square crop holds the box.
    assert box[0] <= x0 and box[1] <= y0 and box[2] >= x1 and box[3] >= y1
    assert np.all(crop_box[:2] <= box[:2]) and np.all(crop_box[2:] >= box[2:])
    if (sequence_id, i) not in _FALLBACK_FRAMES:
      np.testing.assert_array_equal(box, [x0, y0, x1, y1])  # The mask's extent.
    # Inside the person the crop has this frame's brightness (not a neighbour's).
    scale = _SIZE / (crop_box[2] - crop_box[0])
    u0, v0 = np.ceil((np.array([x0, y0]) - crop_box[:2]) * scale).astype(int) + 1
    u1, v1 = np.floor((np.array([x1, y1]) - crop_box[:2]) * scale).astype(int) - 1
    inside = r["image"][v0:v1, u0:u1].reshape(-1, 3).astype(float)
    assert len(inside), (sequence_id, i)
    np.testing.assert_allclose(inside.mean(axis=0), np.array([1, 1, 0.5])  # RGB.
                               * _brightness(i), atol=8, err_msg=f"{sequence_id} {i}")
    # Outside it, background (or the zero padding beyond the image).
    centres = (np.arange(_SIZE) + 0.5) / scale
    xs, ys = centres + crop_box[0], centres + crop_box[1]
    outside = ((xs[None, :] < x0 - 2) | (xs[None, :] > x1 + 2)
               | (ys[:, None] < y0 - 2) | (ys[:, None] > y1 + 2))
    assert outside.any() and r["image"][outside].max() < _BACKGROUND + 15


def test_box_fallbacks_are_counted(built):
  builder, rows, truth, _ = built
  train = builder.info.metadata["train"]
  test = builder.info.metadata["test"]
  frames = len(range(0, _NUM_POSES, _STEP))
  assert set(train["box_fallback_sequences"]) == {"S1/TakingPhoto/58860488",
                                                  "S5/Greeting/60457274"}
  assert "missing" in train["box_fallback_sequences"]["S1/TakingPhoto/58860488"]["why"]
  assert "damaged" in train["box_fallback_sequences"]["S5/Greeting/60457274"]["why"]
  assert train["box_fallback_frames"] == 2 * frames
  assert test["box_fallback_sequences"] == {
      "S9/Phoning 1/54138969": {"frames": 1, "why": "empty or broken masks"}}
  assert [pathlib.Path(p).name for p in train["box_files_renamed"]] == [
      "WalkDog 1.54138969.mat"]
  # The 2D cross-check ran where 2D files exist and agrees to well under a pixel.
  assert train["pose_2d_checked_sequences"] == 4
  assert list(train["pose_2d_unchecked"]) == ["S1/Directions 1/55011271"]
  assert train["pose_2d_mean_error_px"] < 0.01
  # A fallback box is the projected joints' extent plus the margin.
  r = next(r for r in rows["train"]
           if _text(r["sequence_id"]) == "S1/TakingPhoto/58860488")
  px = truth["S1/TakingPhoto/58860488"][1][int(r["frame_index"])]
  lo, hi = px.min(axis=0), px.max(axis=0)
  pad = 0.1 * max(hi - lo)
  np.testing.assert_allclose(r["box"], np.concatenate([lo - pad, hi + pad]),
                             atol=1e-3)
  # The summary survives a reload from disk.
  reloaded = builder_lib.Builder(config=_config(), data_dir=builder.data_dir_root)
  assert reloaded.info.metadata["train"]["box_fallback_frames"] == 2 * frames


def test_build_log_names_every_file_substituted_or_not_used(built, build_log):
  _, _, _, root = built
  box_dir = root / "S1" / release.BOX_DIR
  log = "\n".join(build_log)
  renamed = next(m for m in build_log if "masks read from" in m)
  assert str(box_dir / "WalkDog 1.54138969.mat") in renamed
  assert str(box_dir / "WalkingDog 1.54138969.mat") in renamed  # The usual name.
  assert str(box_dir / "TakingPhoto.58860488.mat") in log  # Missing.
  assert str(root / "S5" / release.BOX_DIR / "Greeting.60457274.mat") in log  # Damaged.
  assert str(root / "S9" / release.BOX_DIR / "Phoning 1.54138969.mat") in log  # Empty.
  assert str(root / "S1" / release.POSE_2D_DIR / "Directions 1.55011271.cdf") in log


def test_subjects_are_recorded_and_a_non_standard_set_is_warned(built, build_log):
  builder, _, _, _ = built
  assert builder.info.metadata["subjects"] == {"train": ["S1", "S5"],
                                               "test": ["S9", "S11"]}
  assert builder.info.metadata["standard_protocol"] is False
  assert builder.info.metadata["subjects_left_out"] == ["S6", "S7", "S8"]
  warning = next(m for m in build_log if "standard protocol" in m)
  assert "without S6, S7, S8" in warning
  assert "train S1, S5, S6, S7, S8 / test S9, S11" in warning


def test_subset_configs_by_name(tmp_path):
  builder = builder_lib.Builder(config="crop128_step5_s1s5s9s11", data_dir=str(tmp_path))
  cfg = builder.builder_config
  assert (cfg.train_subjects, cfg.test_subjects) == (("S1", "S5"), ("S9", "S11"))
  assert (cfg.image_size, cfg.frame_step) == (128, 5)  # crop128_step5's.
  assert builder.info.full_name == "h36m_clips/crop128_step5_s1s5s9s11/1.0.0"
  assert builder_lib.subset_config_name("crop128_step5", ["S9", "S1"]) == (
      "crop128_step5_s1s9")
  for name, message in (("crop128_step5_s9s1", "write it 'crop128_step5_s1s9'"),
                        ("crop128_step5_s2s9", "S2 not among"),
                        ("crop128_step5_s1s5", "one test subject")):
    with pytest.raises(ValueError, match=message):
      builder_lib.Builder(config=name, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="not found"):  # Not a registered config's subset.
    builder_lib.Builder(config="mini_s1s9", data_dir=str(tmp_path))


def test_partial_release_builds_as_a_subset_loadable_by_name(tmp_path, monkeypatch):
  """A release with S1 and S9 only: the standard config names what is missing and the
  subset to build; that subset builds and loads by name, as training loads it."""
  monkeypatch.setenv(builder_lib._WORKERS_ENV, "0")  # pylint: disable=protected-access
  monkeypatch.setattr(builder_lib.cameras_lib, "H36M_CAMERAS",
                      {serial: _CAMERA for serial in release.CAMERA_SERIALS})
  manual_dir, data_dir = tmp_path / "release", tmp_path / "tfds"
  for seed, sequence in enumerate(_SEQUENCES[:2]):
    _write_sequence(manual_dir, seed, *sequence)
  _write_sequence(manual_dir, 9, "S9", "Eating", "54138969", "ok", False)
  standard = builder_lib.Builder(config="crop128_step5", data_dir=str(data_dir))
  with pytest.raises(release.ReleaseError,
                     match=r"subjects S5, S6, S7, S8, S11 missing .* present: S1, S9\. "
                           r".*--config=crop128_step5_s1s9\."):
    testing.prepare(standard, manual_dir)
  testing.prepare(builder_lib.Builder(config="crop128_step5_s1s9",
                                      data_dir=str(data_dir)), manual_dir)
  loaded = builder_lib.Builder(config="crop128_step5_s1s9", data_dir=str(data_dir))
  assert loaded.is_prepared()
  assert loaded.info.metadata["subjects"] == {"train": ["S1"], "test": ["S9"]}
  assert loaded.info.metadata["subjects_left_out"] == ["S5", "S6", "S7", "S8", "S11"]
  source = loaded.as_data_source()
  assert {_text(source["test"][i]["subject"]) for i in range(len(source["test"]))} == {
      "S9"}
  assert len(source["train"]) == 2 * len(range(0, _NUM_POSES, 5))


def test_missing_video_is_named(tmp_path):
  _write_sequence(tmp_path, 0, "S1", "Eating", "54138969", "ok", False)
  video = tmp_path / "S1" / release.VIDEO_DIR / "Eating.54138969.mp4"
  video.unlink()
  (sequence,) = release.find_sequences(tmp_path, ("S1",))
  with pytest.raises(release.ReleaseError, match="missing video .*Eating.54138969.mp4"):
    release.check_sequence(sequence)


def test_truncated_and_short_videos_are_named(tmp_path):
  _write_sequence(tmp_path, 0, "S1", "Eating", "54138969", "ok", False)
  _write_sequence(tmp_path, 1, "S1", "Posing", "54138969", "ok", False,
                  num_video_frames=_NUM_POSES - 1)
  video = tmp_path / "S1" / release.VIDEO_DIR / "Eating.54138969.mp4"
  video.write_bytes(video.read_bytes()[:1000])
  eating, posing = release.find_sequences(tmp_path, ("S1",))
  with pytest.raises(release.ReleaseError, match="Eating.54138969.mp4: cannot open"):
    release.check_sequence(eating)
  with pytest.raises(release.ReleaseError, match="Posing.54138969.mp4: video has 10"):
    release.check_sequence(posing)
  # Streaming catches it too, where the container's frame count cannot be trusted.
  options = builder_lib.Builder(config=_config(), data_dir=str(tmp_path))._options()  # pylint: disable=protected-access
  with pytest.raises(release.ReleaseError,
                     match="Posing.54138969.mp4: video ended after 10 frames"):
    list(examples.sequence_examples(posing, options))


def test_bad_cdf_is_named(tmp_path):
  _write_sequence(tmp_path, 0, "S1", "Eating", "54138969", "ok", False)
  cdf = tmp_path / "S1" / release.POSE_3D_DIR / "Eating.54138969.cdf"
  cdf.write_bytes(cdf.read_bytes()[:200])
  (sequence,) = release.find_sequences(tmp_path, ("S1",))
  with pytest.raises(release.ReleaseError, match="Eating.54138969.cdf: unreadable"):
    release.check_sequence(sequence)
  cdf.write_bytes(b"not a cdf file at all")
  with pytest.raises(release.ReleaseError, match="Eating.54138969.cdf: unreadable"):
    release.check_sequence(sequence)


def test_failed_build_leaves_no_dataset(tmp_path, monkeypatch):
  """TFDS writes into an 'incomplete.*' folder and renames it only on success."""
  monkeypatch.setenv(builder_lib._WORKERS_ENV, "2")  # pylint: disable=protected-access
  for seed, sequence in enumerate(_SEQUENCES[:2]):
    _write_sequence(tmp_path / "release", seed, *sequence)
  _write_sequence(tmp_path / "release", 9, "S9", "Eating", "54138969", "ok", False)
  # Passes the up-front check (the header is intact) but fails while streaming.
  cdf = tmp_path / "release" / "S9" / release.POSE_3D_DIR / "Eating.54138969.cdf"
  original_check = release.check_sequence
  monkeypatch.setattr(release, "check_sequence",
                      lambda s: 1 if s.subject == "S9" else original_check(s))
  cdf.write_bytes(b"damaged after the check")
  builder = _builder(tmp_path / "tfds", train_subjects=("S1",),
                     test_subjects=("S9",))
  with pytest.raises(release.ReleaseError, match="S9.*Eating.54138969.cdf"):
    testing.prepare(builder, tmp_path / "release")
  assert not builder.is_prepared()
  version_dir = tmp_path / "tfds" / "h36m_clips" / "mini"
  assert not (version_dir / "1.0.0").exists()
  assert not [p for p in version_dir.iterdir() if "incomplete" in p.name]


def _build_and_die(manual_dir, data_dir):
  """In a child process: builds, and exits abruptly (like a kill) mid-split."""
  os.environ[builder_lib._WORKERS_ENV] = "0"  # pylint: disable=protected-access
  keyed = builder_lib.builders.keyed

  def die_on_second_sequence(sequence_id, items):
    if sequence_id.endswith("/55011271"):
      os._exit(3)  # pylint: disable=protected-access
    return (yield from keyed(sequence_id, items))

  builder_lib.builders.keyed = die_on_second_sequence
  testing.prepare(_builder(data_dir, train_subjects=("S1",), test_subjects=("S9",)),
           manual_dir)


def test_killed_build_leaves_no_dataset(tmp_path, monkeypatch):
  """A build killed mid-way leaves only an 'incomplete.*' folder, never a dataset."""
  manual_dir, data_dir = tmp_path / "release", tmp_path / "tfds"
  for seed, sequence in enumerate(_SEQUENCES[:2]):
    _write_sequence(manual_dir, seed, *sequence)
  _write_sequence(manual_dir, 9, "S9", "Eating", "54138969", "ok", False)
  child = multiprocessing.get_context("spawn").Process(
      target=_build_and_die, args=(manual_dir, data_dir))
  child.start()
  child.join(60)
  assert child.exitcode == 3
  config_dir = data_dir / "h36m_clips" / "mini"
  leftovers = [p.name for p in config_dir.iterdir() if p.name != ".build.lock"]
  assert len(leftovers) == 1 and leftovers[0].startswith("incomplete.")
  builder = _builder(data_dir, train_subjects=("S1",), test_subjects=("S9",))
  assert not builder.is_prepared()
  # Building again works and removes the stale incomplete folder.
  monkeypatch.setenv(builder_lib._WORKERS_ENV, "0")  # pylint: disable=protected-access
  testing.prepare(builder, manual_dir)
  assert builder.is_prepared()
  assert len(builder.as_data_source()["train"]) == 2 * len(range(0, _NUM_POSES, _STEP))
  assert sorted(p.name for p in config_dir.iterdir()) == [".build.lock", "1.0.0"]
