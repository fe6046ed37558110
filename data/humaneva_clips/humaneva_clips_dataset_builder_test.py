"""Tests of the humaneva_clips builder on a miniature release in the real layout.

The miniature: 80 x 60 px XVID videos of three cameras (with per-camera sync offsets)
whose person is a rectangle over the projected joints with a brightness that encodes
the pose's frame number, VideoPose3D-style npz files (3D chunks with a gap; chunk lengths
with the invalid chunk under 'Unlabeled/'; projected 2D joints) and `.cal` files in
Bouguet's order with HumanEva-like distortion.
"""

import pathlib

import cv2
import numpy as np
import pytest

from data._builder_tools import testing
from rpsm_jax import joints

from . import examples
from . import humaneva_clips_dataset_builder as builder_lib
from . import release

_W, _H = 80, 60
_SIZE = 32
_BACKGROUND = 20
_NUM_VIDEO_FRAMES = 26
# Frame numbers: 'Validate' holds [2, 9), 'Train' [9, 20) of every trial.
_RANGES = {"Validate": (2, 9), "Train": (9, 20)}
# (subject, trial, per-camera sync offsets, Train chunk lengths with None = invalid).
_TRIALS = (
    ("S1", "Walking 1", (3, 2, 4), (4, None, 5)),
    ("S1", "Jog 1", (1, 1, 2), (11,)),
    ("S1", "Box 1", (2, 3, 1), (11,)),
    ("S1", "Gestures 1", (1, 1, 1), (11,)),  # Not one of the paper's actions.
    ("S2", "Walking 1", (5, 5, 4), (11,)),
)
_INVALID_CHUNK = ("Train/S1", "Walking 1 chunk1", 2)
# Bouguet's kc = (k1, k2, p1, p2, k3), HumanEva-like values.
_KC = (-0.289, 0.106, -0.00136, 0.00113, 0.0)
# Camera centres (world mm) and the point they look at.
_CENTRES = {"C1": (4000.0, 600.0, 1500.0), "C2": (800.0, -3800.0, 1500.0),
            "C3": (-800.0, 3900.0, 1400.0)}
_TARGET = np.array([0.0, 0.0, 900.0])
_VP3D_NAMES = ("Pelvis", "Neck", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow",
               "RWrist", "LHip", "LKnee", "LAnkle", "RHip", "RKnee", "RAnkle", "HeadTop")


def _brightness(frame_number):
  return 30 + 11 * frame_number


def _rotation(centre):
  """World -> camera rotation of a camera at `centre` looking at _TARGET, z up."""
  z = _TARGET - centre
  z /= np.linalg.norm(z)
  y = np.array([0.0, 0.0, -1.0])
  y -= (y @ z) * z
  y /= np.linalg.norm(y)
  return np.stack([np.cross(y, z), y, z])


def _camera(name):
  centre = np.asarray(_CENTRES[name])
  rotation = _rotation(centre)
  return dict(f=(96.0, 95.5), c=(39.6, 29.3), alpha=0.0, kc=_KC, rotation=rotation,
              translation=-rotation @ centre)


def _bouguet_project(world_mm, cam):
  """Bouguet's projection written out per coordinate, independently of release.py."""
  p = world_mm @ cam["rotation"].T + cam["translation"]
  x, y = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
  k1, k2, p1, p2, k3 = cam["kc"]
  r2 = x**2 + y**2
  radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
  xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x**2)
  yd = y * radial + p1 * (r2 + 2 * y**2) + 2 * p2 * x * y
  return np.stack([cam["f"][0] * (xd + cam["alpha"] * yd) + cam["c"][0],
                   cam["f"][1] * yd + cam["c"][1]], axis=-1)


def _devkit_project(camera_mm, camera):
  """data/README.md's projection with a stored camera (edge convention pixels)."""
  x = camera_mm[..., 0] / camera_mm[..., 2]
  y = camera_mm[..., 1] / camera_mm[..., 2]
  k1, k2, k3 = camera["k"]
  p1, p2 = camera["p"]
  r2 = x * x + y * y
  radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
  tan = p1 * y + p2 * x
  u = camera["f"][0] * (x * (radial + tan) + p2 * r2) + camera["c"][0]
  v = camera["f"][1] * (y * (radial + tan) + p1 * r2) + camera["c"][1]
  return np.stack([u, v], axis=-1)


def _pose(seed, frame_number):
  """(15, 3) world metres: a 1.7 m figure (z up) drifting along x."""
  rng = np.random.default_rng(seed)
  body = rng.uniform([-0.2, -0.2, 0.1], [0.2, 0.2, 1.7], (15, 3))
  body[14, 2] = 1.75  # Head top highest, ankles lowest.
  body[[10, 13], 2] = 0.08
  return body + np.array([0.01 * frame_number, 0.0, 0.0])


def _person_box(pose_world, cam):
  px = _bouguet_project(pose_world * 1000, cam) + 0.5  # Edge convention.
  lo = np.floor(px.min(axis=0)).astype(int)
  hi = np.ceil(px.max(axis=0)).astype(int)
  return np.clip(lo, 0, None), np.minimum(hi, [_W, _H])


def _write_video(path, seed, cam, sync, num_frames=_NUM_VIDEO_FRAMES):
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), 60, (_W, _H))
  for video_index in range(num_frames):
    frame = np.full((_H, _W, 3), _BACKGROUND, np.uint8)
    n = video_index - sync + 1  # The pose frame number this video frame shows.
    if 0 <= n < _RANGES["Train"][1]:
      (x0, y0), (x1, y1) = _person_box(_pose(seed, n), cam)
      frame[y0:y1, x0:x1] = _brightness(n)
      frame[y0:y1, x0:x1, 0] = _brightness(n) // 2  # Less blue: BGR order shows.
    writer.write(frame)
  writer.release()


def _write_cal(path, cam):
  path.parent.mkdir(parents=True, exist_ok=True)
  values = [*cam["f"], *cam["c"], cam["alpha"], *cam["kc"],
            *cam["rotation"].reshape(-1), *cam["translation"]]
  path.write_text("".join(f"{v:.10f}\n" for v in values))


def _chunks(lengths, start):
  """[(chunk number, first frame, length, valid)] tiling from `start`."""
  out, first = [], start
  for number, length in enumerate(lengths):
    valid = length is not None
    length = length if valid else _INVALID_CHUNK[2]
    out.append((number, first, length, valid))
    first += length
  return out


def _write_release(root, with_lengths=True):
  positions_3d, positions_2d, detections = {}, {}, {}
  for seed, (subject, trial, sync, train_lengths) in enumerate(_TRIALS):
    for split, (start, end) in _RANGES.items():
      key = f"{split}/{subject}"
      lengths = train_lengths if split == "Train" else (end - start,)
      for number, first, length, valid in _chunks(lengths, start):
        name = f"{trial} chunk{number}"
        poses = np.stack([_pose(seed, n) for n in range(first, first + length)])
        projected = [_bouguet_project(poses * 1000, _camera(c)).astype(np.float32)
                     for c in release.CAMERAS]
        if valid:
          positions_3d.setdefault(key, {})[name] = poses.astype(np.float32)
          positions_2d.setdefault(key, {})[name] = projected
          detections.setdefault(key, {})[name] = projected
        else:
          detections.setdefault(f"Unlabeled/{key}", {})[name] = projected
    for i, camera in enumerate(release.CAMERAS):
      _write_video(root / subject / release.VIDEO_DIR / release.video_name(trial, camera),
                   seed, _camera(camera), sync[i])
  for subject in ("S1", "S2"):
    for camera in release.CAMERAS:
      _write_cal(root / subject / release.CALIBRATION_DIR / f"{camera}.cal",
                 _camera(camera))
  detections["Unlabeled/S1"] = {"Walking 2": [np.zeros((30, 15, 2))] * 3}  # Ignored.
  np.savez_compressed(root / release.POSES_3D_FILE, positions_3d=positions_3d)
  np.savez_compressed(root / release.POSES_2D_FILE, positions_2d=positions_2d,
                      metadata={"layout_name": "humaneva15"})
  if with_lengths:
    np.savez_compressed(root / release.CHUNK_LENGTHS_FILE, positions_2d=detections)


def _tables():
  frame_ranges = {f"{split}/{s}": {} for split in _RANGES for s in ("S1", "S2")}
  sync_offsets = {"S1": {}, "S2": {}}
  for subject, trial, sync, _ in _TRIALS:
    for split, frame_range in _RANGES.items():
      frame_ranges[f"{split}/{subject}"][trial] = frame_range
    sync_offsets[subject][trial] = sync
  return frame_ranges, sync_offsets


def _config(**kwargs):
  frame_ranges, sync_offsets = _tables()
  defaults = dict(name="mini", image_size=_SIZE, subjects=("S1", "S2"),
                  frame_ranges=frame_ranges, sync_offsets=sync_offsets,
                  camera_centres={s: _CENTRES for s in ("S1", "S2")}, num_workers=2)
  defaults.update(kwargs)
  return builder_lib.HumanEvaClipsConfig(**defaults)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The miniature release, built once with 2 worker processes."""
  root = tmp_path_factory.mktemp("release")
  _write_release(root)
  data_dir = tmp_path_factory.mktemp("tfds")
  builder = builder_lib.Builder(config=_config(), data_dir=str(data_dir))
  testing.prepare(builder, root, builder_lib._WORKERS_ENV)  # pylint: disable=protected-access
  source = builder.as_data_source()
  rows = {split: [source[split][i] for i in range(len(source[split]))]
          for split in ("train", "test")}
  return builder, rows


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def _find(sequences, sequence_id):
  return next(s for s in sequences if s.sequence_id == sequence_id)


def test_tables_and_joint_mapping():
  for key, trials in release.FRAME_RANGES.items():
    split, subject = key.split("/")
    for trial, (start, end) in trials.items():
      assert start < end and len(release.SYNC_OFFSETS[subject][trial]) == 3
      if split == "Validate":  # Validate is the first part of the trial, Train the rest.
        assert release.FRAME_RANGES[f"Train/{subject}"][trial][0] == end
  names = tuple(_VP3D_NAMES[i] for i in release.FROM_VP3D_15)
  assert names == joints.HUMANEVA_JOINTS
  assert release.split_trial("Jog 1") == ("Jogging", "1")
  assert release.split_trial("Box 1") == ("Boxing", "1")
  assert release.parse_chunk("Walking 1 chunk12") == ("Walking 1", 12)
  assert release.video_name("Walking 1", "C2") == "Walking_1_(C2).avi"
  with pytest.raises(ValueError, match="Dancing"):
    release.split_trial("Dancing 1")


def test_calibration_file_and_projection(tmp_path):
  cam = _camera("C2")
  _write_cal(tmp_path / "C2.cal", cam)
  calibration = release.read_calibration(tmp_path / "C2.cal")
  assert calibration.k == (_KC[0], _KC[1], _KC[4]) and calibration.p == (_KC[2], _KC[3])
  np.testing.assert_allclose(calibration.centre, _CENTRES["C2"], atol=1e-3)
  points = _pose(0, 3) * 1000
  np.testing.assert_allclose(
      calibration.project(calibration.world_to_camera(points)),
      _bouguet_project(points, cam), atol=1e-6)
  (tmp_path / "bad.cal").write_text("1\n2\n3\n")
  with pytest.raises(release.ReleaseError, match=r"bad.cal: expected 22"):
    release.read_calibration(tmp_path / "bad.cal")
  with pytest.raises(release.ReleaseError, match=r"missing calibration file .*C9.cal"):
    release.read_calibration(tmp_path / "C9.cal")


def test_place_chunks():
  # From the 3D file alone, chunks after an invalid one of unknown length stay unplaced.
  assert release.place_chunks((10, 30), {0: 4, 2: 5}, None, "x") == {0: 10}
  assert release.place_chunks((10, 30), {1: 4}, None, "x") == {}
  # With every chunk's length they are placed.
  assert release.place_chunks((10, 30), {0: 4, 2: 5}, {0: 4, 1: 11, 2: 5}, "x") == {
      0: 10, 2: 25}
  with pytest.raises(release.ReleaseError, match="f.npz: chunks .* do not tile"):
    release.place_chunks((10, 30), {0: 4, 2: 5}, {0: 4, 1: 3, 2: 5}, "f.npz")
  with pytest.raises(release.ReleaseError, match="f.npz: chunk2 has 5 3D frames but 6"):
    release.place_chunks((10, 30), {0: 4, 2: 5}, {0: 4, 1: 10, 2: 6}, "f.npz")


def test_without_chunk_lengths_later_chunks_are_left_out(tmp_path):
  _write_release(tmp_path, with_lengths=False)
  frame_ranges, sync_offsets = _tables()
  poses_3d = release.load_npz_dict(tmp_path / release.POSES_3D_FILE, "positions_3d")
  sequences, unplaced = release.find_sequences(
      tmp_path, "Train", ("S1",), joints.HUMANEVA_ACTIONS, ("C1",), poses_3d,
      frame_ranges=frame_ranges, sync_offsets=sync_offsets)
  assert unplaced == ["Train/S1/Walking 1 chunk2"]
  assert {s.sequence_id for s in sequences} == {
      "Train/S1/Box 1 chunk0/C1", "Train/S1/Jog 1 chunk0/C1",
      "Train/S1/Walking 1 chunk0/C1"}


def test_splits_actions_and_chunks(built):
  builder, rows = built
  assert builder.name == "humaneva_clips"
  ids = {split: {_text(r["sequence_id"]) for r in rs} for split, rs in rows.items()}
  prefixes = {split: {i.split("/")[0] for i in ids[split]} for split in ids}
  assert prefixes == {"train": {"Train"}, "test": {"Validate"}}
  # Chunk 2 comes after an invalid chunk: placed with the chunk-length file.
  assert "Train/S1/Walking 1 chunk2/C3" in ids["train"]
  assert not any("Gestures" in i for i in ids["train"] | ids["test"])
  # 5 Train chunks (S1: 2 Walking, Jog, Box; S2: Walking), 4 Validate chunks, x3 cameras.
  assert len(ids["train"]) == 15 and len(ids["test"]) == 12
  for split, rs in rows.items():
    for r in rs:
      n = int(r["frame_index"])
      start, end = _RANGES["Train" if split == "train" else "Validate"]
      assert start <= n < end
      trial = _text(r["sequence_id"]).split("/")[2].rsplit(" ", 1)[0]
      assert _text(r["action"]) == release.split_trial(trial)[0]
      assert _text(r["action"]) in joints.HUMANEVA_ACTIONS
  assert {_text(r["subject"]) for r in rows["test"]} == {"S1", "S2"}
  # Frames of a chunk are consecutive numbers, in order.
  chunk = [int(r["frame_index"]) for r in rows["train"]
           if _text(r["sequence_id"]) == "Train/S1/Walking 1 chunk2/C1"]
  assert chunk == list(range(15, 20))


def test_features_and_projection(built):
  _, rows = built
  seeds = {(s, t): i for i, (s, t, _, _) in enumerate(_TRIALS)}
  for r in rows["train"] + rows["test"]:
    split, subject, chunk, camera = _text(r["sequence_id"]).split("/")
    seed = seeds[subject, chunk.rsplit(" ", 1)[0]]
    cam = _camera(camera)
    world = _pose(seed, int(r["frame_index"])) * 1000
    expected_3d = world @ cam["rotation"].T + cam["translation"]
    order = list(release.FROM_VP3D_15)
    assert r["pose_3d"].shape == (14, 3) and r["image"].shape == (_SIZE, _SIZE, 3)
    np.testing.assert_allclose(r["pose_3d"], expected_3d[order], atol=0.05)
    crop_box = r["crop_box"].astype(np.float64)
    side = crop_box[2] - crop_box[0]
    assert side == crop_box[3] - crop_box[1] and side > 0
    full = r["pose_2d"] * side / _SIZE + crop_box[:2]
    np.testing.assert_allclose(full, _bouguet_project(world, cam)[order] + 0.5, atol=1e-3)
    # data/README.md's projection with the stored camera lands within a pixel.
    stored = {k: np.asarray(v, np.float64) for k, v in r["camera"].items()
              if k != "name"}
    np.testing.assert_allclose(_devkit_project(r["pose_3d"].astype(np.float64), stored),
                               full, atol=1.0)
    np.testing.assert_array_equal(r["camera"]["image_size"], [_W, _H])
    assert _text(r["camera"]["name"]) == camera
    box = r["box"]
    assert np.all(crop_box[:2] <= box[:2]) and np.all(crop_box[2:] >= box[2:])
    assert np.all(box[:2] <= full.min(0)) and np.all(box[2:] >= full.max(0))


def test_crop_holds_the_synchronised_frame(built):
  _, rows = built
  seeds = {(s, t): i for i, (s, t, _, _) in enumerate(_TRIALS)}
  for r in rows["train"] + rows["test"]:
    _, subject, chunk, camera = _text(r["sequence_id"]).split("/")
    n = int(r["frame_index"])
    (x0, y0), (x1, y1) = _person_box(_pose(seeds[subject, chunk.rsplit(" ", 1)[0]], n),
                                     _camera(camera))
    crop_box = r["crop_box"]
    scale = _SIZE / (crop_box[2] - crop_box[0])
    u0, v0 = np.ceil((np.array([x0, y0]) - crop_box[:2]) * scale).astype(int) + 1
    u1, v1 = np.floor((np.array([x1, y1]) - crop_box[:2]) * scale).astype(int) - 1
    inside = r["image"][v0:v1, u0:u1].reshape(-1, 3).astype(float)
    assert len(inside), r["sequence_id"]
    red, green, blue = inside.mean(axis=0)
    # This frame's brightness, not a neighbour's (11 apart); green, since the videos'
    # chroma is subsampled and blurs red and blue at the rectangle's edges.
    assert abs(green - _brightness(n)) < 5, (_text(r["sequence_id"]), n, green)
    assert blue < 0.75 * red  # RGB, not BGR.


def test_metadata_cross_checks(built):
  builder, _ = built
  for split in ("train", "test"):
    summary = builder.info.metadata[split]
    assert summary["chunks_unplaced"] == []
    assert summary["pose_2d_checked_sequences"] == summary["sequences"]
    assert summary["pose_2d_mean_error_px"] < 1e-3
    assert summary["joints_outside_image"] == 0.0
  offsets = builder.info.metadata["camera_centre_offset_mm"]
  assert set(offsets) == {f"{s}/{c}" for s in ("S1", "S2") for c in release.CAMERAS}
  assert max(offsets.values()) < 0.01


def test_missing_and_short_files_are_named(tmp_path):
  _write_release(tmp_path)
  frame_ranges, sync_offsets = _tables()
  poses_3d = release.load_npz_dict(tmp_path / release.POSES_3D_FILE, "positions_3d")

  def sequences(subjects=("S1",)):
    return release.find_sequences(
        tmp_path, "Train", subjects, ("Walking",), ("C1",), poses_3d,
        frame_ranges=frame_ranges, sync_offsets=sync_offsets)[0]

  video = tmp_path / "S1" / release.VIDEO_DIR / "Walking_1_(C1).avi"
  _write_video(video, 0, _camera("C1"), 3, num_frames=13)
  short = _find(sequences(), "Train/S1/Walking 1 chunk0/C1")
  with pytest.raises(release.ReleaseError,
                     match=r"Walking_1_\(C1\).avi: video has 13 frames but .* needs"):
    release.check_video(short)
  options = examples.Options(image_size=_SIZE, frame_step=1, jpeg_quality=90,
                             box_margin=0.1)
  with pytest.raises(release.ReleaseError,
                     match=r"Walking_1_\(C1\).avi: video ended after 13 frames"):
    list(examples.sequence_examples(short, options))
  video.write_bytes(video.read_bytes()[:300])
  with pytest.raises(release.ReleaseError, match=r"Walking_1_\(C1\).avi: cannot open"):
    release.check_video(short)
  video.unlink()
  with pytest.raises(release.ReleaseError, match=r"missing video .*Walking_1_\(C1\).avi"):
    release.check_video(short)
  (tmp_path / "S1" / release.CALIBRATION_DIR / "C1.cal").unlink()
  with pytest.raises(release.ReleaseError, match=r"missing calibration file .*S1.*C1.cal"):
    sequences()
  with pytest.raises(release.ReleaseError,
                     match=r"data_3d_humaneva15.npz: no subject 'Train/S3'"):
    sequences(("S3",))
  (tmp_path / release.POSES_3D_FILE).write_bytes(b"PK not really")
  with pytest.raises(release.ReleaseError, match="data_3d_humaneva15.npz: unreadable"):
    release.load_npz_dict(tmp_path / release.POSES_3D_FILE, "positions_3d")


def test_calibration_that_puts_joints_behind_the_camera_is_named(tmp_path):
  _write_release(tmp_path)
  cam = _camera("C1")
  cam["rotation"] = -cam["rotation"]  # Looks away from the person.
  cam["translation"] = -cam["translation"]
  _write_cal(tmp_path / "S1" / release.CALIBRATION_DIR / "C1.cal", cam)
  frame_ranges, sync_offsets = _tables()
  poses_3d = release.load_npz_dict(tmp_path / release.POSES_3D_FILE, "positions_3d")
  sequence = release.find_sequences(
      tmp_path, "Validate", ("S1",), ("Walking",), ("C1",), poses_3d,
      frame_ranges=frame_ranges, sync_offsets=sync_offsets)[0][0]
  options = examples.Options(image_size=_SIZE, frame_step=1, jpeg_quality=90,
                             box_margin=0.1)
  with pytest.raises(release.ReleaseError, match=r"S1.*C1.cal: joints of .* behind"):
    list(examples.sequence_examples(sequence, options))


def test_failed_build_leaves_no_dataset(tmp_path, monkeypatch):
  """A video that passes the up-front check but ends early: nothing looks built."""
  monkeypatch.setenv(builder_lib._WORKERS_ENV, "0")  # pylint: disable=protected-access
  _write_release(tmp_path / "release")
  monkeypatch.setattr(release, "check_video", lambda s: None)
  _write_video(tmp_path / "release" / "S2" / release.VIDEO_DIR / "Walking_1_(C2).avi",
               4, _camera("C2"), 5, num_frames=8)
  builder = builder_lib.Builder(config=_config(), data_dir=str(tmp_path / "tfds"))
  with pytest.raises(release.ReleaseError, match=r"S2.*Walking_1_\(C2\).avi: video ended"):
    testing.prepare(builder, tmp_path / "release")
  assert not builder.is_prepared()
  config_dir = pathlib.Path(tmp_path / "tfds" / "humaneva_clips" / "mini")
  assert not (config_dir / "1.0.0").exists()
  assert not [p for p in config_dir.iterdir() if "incomplete" in p.name]
