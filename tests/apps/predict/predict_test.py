"""predict on videos and frame folders: outputs, crops, streaming, named input errors.

The run (tests/conftest.py) is trained once per session; the video comes from
tests/apps/predict/conftest.py.
"""

import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np
from PIL import Image
import pytest

from rpsm_jax import crops
from rpsm_jax import joints
from rpsm_jax import poses
from rpsm_jax.apps import predict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
NUM_FRAMES = 10          # the video's frames (conftest.py)


def _read_video(path):
  capture, frames = cv2.VideoCapture(path), []
  while True:
    ok, frame = capture.read()
    if not ok:
      return frames
    frames.append(frame)


def _expected_poses(run, frames_bgr, squares, streaming=False):
  """The model run by hand on the crops, clip by clip: (F, K, P, 3) mm."""
  s, c = run.config.model.input_size, run.config.clip_length
  cuts = np.stack([crops.crop_and_resize(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), q, s)
                   for f, q in zip(frames_bgr, squares)])
  apply = jax.jit(run.model.apply)
  if streaming:
    out = apply({"params": run.params}, poses.model_input(cuts[None]))[:, 0]
  else:
    pad = -len(cuts) % c
    cuts = np.concatenate([cuts, np.repeat(cuts[-1:], pad, axis=0)])
    clips = cuts.reshape((-1, c) + cuts.shape[1:])
    out = apply({"params": run.params}, poses.model_input(clips))
    out = out.reshape((out.shape[0], -1) + out.shape[3:])[:, :len(frames_bgr)]
  mm = poses.denormalize_root_relative(np.asarray(out), run.norm)
  return np.moveaxis(mm, 0, 1)


def test_cli_video_with_boxes_end_to_end(trained_workdir, run, video, tmp_path):
  path, boxes = video
  boxes_file = tmp_path / "boxes.json"
  boxes_file.write_text(json.dumps({"boxes": boxes.tolist()}))
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.apps.predict", f"--workdir={trained_workdir}",
       f"--input={path}", f"--boxes={boxes_file}", f"--output={out}"],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  k, p = run.config.model.num_stages, 17
  with np.load(out / "poses.npz") as z:
    poses, crop_boxes = z["poses_mm"], z["crop_boxes"]
    assert poses.shape == (NUM_FRAMES, k, p, 3) and poses.dtype == np.float32
    assert list(z["joint_names"]) == list(joints.H36M_JOINTS)
    assert list(z["stages"]) == list(range(1, k + 1))
    assert int(z["checkpoint_step"]) == run.step == 2
    np.testing.assert_allclose(z["person_boxes"], boxes)
  np.testing.assert_array_equal(poses[..., 0, :], 0.0)          # root-relative
  # mm: the run's statistics span hundreds of mm; normalised outputs would be ~[0, 1].
  assert 50 < np.abs(poses).max() < 5000
  squares = [crops.square_crop_box(b) for b in boxes]
  for cut, square in zip(crop_boxes, squares):
    np.testing.assert_allclose(cut, square, atol=0.51)
    assert cut[2] - cut[0] == cut[3] - cut[1]
  np.testing.assert_allclose(poses, _expected_poses(run, _read_video(path), squares),
                             atol=1e-3)
  doc = json.loads((out / "poses.json").read_text())
  meta = doc["metadata"]
  assert meta["units"] == "mm" and meta["crop"] == "boxes_file"
  assert meta["joint_names"] == list(joints.H36M_JOINTS)
  assert meta["parents"] == list(joints.H36M_PARENTS)
  assert meta["checkpoint_step"] == 2 and meta["num_frames"] == NUM_FRAMES
  assert meta["streaming"] is False and meta["clip_length"] == run.config.clip_length
  assert len(doc["frames"]) == NUM_FRAMES
  last = doc["frames"][-1]
  assert last["crop_box"] == crop_boxes[-1].tolist()
  np.testing.assert_allclose(last["poses_mm"][f"stage_{k}"], poses[-1, -1], atol=0.01)
  animation = _read_video(str(out / "poses.mp4"))
  assert len(animation) == NUM_FRAMES
  assert animation[0].shape[0] == 256 and animation[0].shape[1] > (k + 1) * 256 - 2


def test_centre_crop_streaming_and_last_stage(run, video, tmp_path):
  path, _ = video
  meta = predict.predict(run, path, str(tmp_path / "a"), stages="last", max_frames=6,
                         animation="none")
  assert meta["crop"] == "centre_square" and meta["boxes_file"] is None
  assert meta["stages"] == [run.config.model.num_stages] and meta["num_frames"] == 6
  frames = _read_video(path)[:6]
  squares = [crops.centre_crop_box(*f.shape[:2]) for f in frames]
  with np.load(tmp_path / "a" / "poses.npz") as z:
    poses = z["poses_mm"]
    np.testing.assert_array_equal(z["crop_boxes"][0], [12, 0, 84, 72])
    assert np.isnan(z["person_boxes"]).all()
  assert poses.shape == (6, 1, 17, 3)
  per_clip = _expected_poses(run, frames, squares)
  np.testing.assert_allclose(poses[:, 0], per_clip[:, -1], atol=1e-3)
  assert not os.path.exists(tmp_path / "a" / "poses.mp4")

  predict.predict(run, path, str(tmp_path / "b"), max_frames=6, streaming=True,
                  animation="none")
  with np.load(tmp_path / "b" / "poses.npz") as z:
    streamed = z["poses_mm"]
  np.testing.assert_allclose(streamed, _expected_poses(run, frames, squares, True),
                             atol=1e-3)
  c = run.config.clip_length
  np.testing.assert_allclose(streamed[:c], per_clip[:c], atol=1e-3)   # same first clip
  assert np.abs(streamed[c:] - per_clip[c:]).max() > 1e-3             # state carried


def test_frame_step_runs_interleaved_sub_sequences_as_evaluation(run, video, tmp_path):
  """With --frame_step=2 a clip takes every 2nd frame: frames 0, 2, 4, ... and 1, 3, 5, ...
  run as separate sequences (clips reset per clip, or streamed per sub-sequence)."""
  path, _ = video
  frames = _read_video(path)
  squares = [crops.centre_crop_box(*f.shape[:2]) for f in frames]
  for streaming in (False, True):
    out = tmp_path / f"streaming_{streaming}"
    meta = predict.predict(run, path, str(out), frame_step=2, streaming=streaming,
                           animation="gif")
    assert meta["frame_step"] == 2 and meta["num_frames"] == NUM_FRAMES
    assert meta["clip_frame_spacing_s"] == pytest.approx(0.2, rel=1e-3)   # a 10 fps video
    with np.load(out / "poses.npz") as z:
      got = z["poses_mm"]
      np.testing.assert_array_equal(z["frame_index"], np.arange(NUM_FRAMES))
    for sub in range(2):
      np.testing.assert_allclose(
          got[sub::2], _expected_poses(run, frames[sub::2], squares[sub::2], streaming),
          atol=1e-3)
    with Image.open(out / "poses.gif") as gif:   # every frame drawn, in order
      assert gif.n_frames == NUM_FRAMES
  with pytest.raises(predict.InputError, match="--frame_step must be >= 1"):
    predict.predict(run, path, str(tmp_path / "bad"), frame_step=0, animation="none")


def test_folder_of_frames_matches_video_with_csv_boxes_and_gif(run, video, tmp_path):
  path, boxes = video
  folder = tmp_path / "frames"
  folder.mkdir()
  frames = _read_video(path)
  for i, frame in enumerate(frames):   # unpadded numbers: natural order is needed
    cv2.imwrite(str(folder / f"frame_{i + 1}.png"), frame)
  (folder / "notes.txt").write_text("not a frame")
  csv = tmp_path / "boxes.csv"
  csv.write_text("x0,y0,x1,y1\n" + "\n".join(",".join(map(str, b)) for b in boxes))
  meta = predict.predict(run, str(folder), str(tmp_path / "out"), boxes_path=str(csv),
                         animation="gif", panel_size=64)
  assert meta["input_kind"] == "folder" and meta["num_frames"] == NUM_FRAMES
  with np.load(tmp_path / "out" / "poses.npz") as z:
    poses = z["poses_mm"]
  squares = [crops.square_crop_box(b) for b in boxes]
  np.testing.assert_allclose(poses, _expected_poses(run, frames, squares), atol=1e-3)
  with Image.open(tmp_path / "out" / "poses.gif") as gif:
    assert gif.n_frames == NUM_FRAMES and gif.size[1] == 64


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist"),
    ("empty", "empty"),
    ("corrupt", "cannot open video"),
    ("empty_folder", "holds no image files"),
    ("corrupt_frame", "cannot decode image"),
])
def test_bad_inputs_are_named(run, tmp_path, kind, message):
  if kind == "missing":
    bad = tmp_path / "nothing.mp4"
  elif kind == "empty":
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
  elif kind == "corrupt":
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
  elif kind == "empty_folder":
    bad = tmp_path / "frames"
    bad.mkdir()
  else:
    bad = tmp_path / "frames"
    bad.mkdir()
    cv2.imwrite(str(bad / "000.png"), np.zeros((8, 8, 3), np.uint8))
    (bad / "001.png").write_bytes(b"\x89PNG garbage")
    message = f"cannot decode image {bad / '001.png'}"
  with pytest.raises(predict.InputError, match=message) as e:
    predict.predict(run, str(bad), str(tmp_path / "out"), animation="none")
  assert str(bad) in str(e.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_unreadable_video_is_named(run, video, tmp_path):
  bad = tmp_path / "locked.mp4"
  bad.write_bytes(open(video[0], "rb").read())
  bad.chmod(0)
  with pytest.raises(predict.InputError, match=f"cannot read video {bad}"):
    predict.predict(run, str(bad), str(tmp_path / "out"), animation="none")


def test_cli_reports_a_corrupt_video_by_name(trained_workdir, tmp_path):
  bad = tmp_path / "noise.mp4"
  bad.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, np.uint8).tobytes())
  result = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.apps.predict", f"--workdir={trained_workdir}",
       f"--input={bad}", f"--output={tmp_path / 'out'}"],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0
  assert f"cannot open video {bad}" in result.stderr
  assert "Traceback" not in result.stderr
