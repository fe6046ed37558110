"""Inference on videos and frame folders, export, and the evaluation figure.

One tiny run is trained per session and shared; the input video is rendered by the
synthetic dataset's renderer: a walker pasted into a wider frame, with its true person box.
"""

import json
import os
import subprocess
import sys
import textwrap

import cv2
import jax
import numpy as np
import pytest

from configs import synthetic_tiny
from data.synthetic_clips import sequences
from rpsm_jax import crops
from rpsm_jax import poses
from rpsm_jax.apps import export
from rpsm_jax.apps import inference
from rpsm_jax.pipeline import input_pipeline
from rpsm_jax import joints
from rpsm_jax.apps import predict
from rpsm_jax.training import train
from rpsm_jax.evaluation import visualize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES = 10          # 2 full clips of 4 frames and a padded one
FRAME_WH = (96, 72)      # non-square: the centre crop and the box crop differ


@pytest.fixture(scope="session")
def trained_workdir(tiny_data_dir, tmp_path_factory):
  config = synthetic_tiny.get_config()
  config.dataset.data_dir = tiny_data_dir
  config.num_train_steps = 2
  config.log_every_steps = config.checkpoint_every_steps = 2
  config.eval_every_steps = 100
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="session")
def run(trained_workdir):
  return inference.load_run(trained_workdir)


@pytest.fixture(scope="session")
def video(tmp_path_factory):
  """(path of an mp4, (N, 4) true person boxes in its pixels)."""
  path = str(tmp_path_factory.mktemp("video") / "walk.mp4")
  size, (w, h), (ox, oy) = 64, FRAME_WH, (16, 4)
  spec = sequences.SequenceSpec(seed=3, subject="S9", action="Walking", take=1,
                                num_frames=NUM_FRAMES, fps=10.0, image_size=size,
                                num_cameras=1)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
  boxes = []
  for _, ex in sequences.film(spec):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[oy:oy + size, ox:ox + size] = cv2.imdecode(np.frombuffer(ex["image"], np.uint8),
                                                     cv2.IMREAD_COLOR)
    writer.write(frame)
    crop = ex["crop_box"]
    boxes.append((ex["box"] - np.tile(crop[:2], 2)) * size / (crop[2] - crop[0])
                 + np.array([ox, oy, ox, oy]))
  writer.release()
  return path, np.asarray(boxes)


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
  from PIL import Image  # pylint: disable=g-import-not-at-top
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


@pytest.mark.parametrize("name,content,message", [
    ("b.json", "[[0, 0, 10, 10], [0, 0, 10]]", "cannot parse|shape"),
    ("b.json", '{"box": []}', "needs a 'boxes' list"),
    ("b.json", "[[0, 0, 10, 10], [0, 0, null, 10]]", r"non-finite values in rows \[1\]"),
    ("b.json", "[[0, 0, 10, 10], [5, 0, 5, 10]]", r"rows \[1\] have x1 <= x0"),
    ("b.json", "[]", "shape|no box"),
    ("b.csv", "0,0,10,10\n1,2,3\n", "line 2: expected 4 values"),
    ("b.csv", "0,0,10,10\nx,y,z,w\n", "line 2: not numbers"),
    ("b.csv", "0,0,10,10\n0,0,inf,10\n", "non-finite"),
    ("b.xml", "<boxes/>", "unknown format"),
])
def test_bad_boxes_files_are_refused(tmp_path, name, content, message):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(predict.InputError, match=message) as e:
    predict.load_boxes(str(path))
  assert str(path) in str(e.value)


def test_boxes_npy_and_count_checks(run, video, tmp_path):
  path, boxes = video
  npy = tmp_path / "boxes.npy"
  np.save(npy, boxes.astype(np.float32))
  np.testing.assert_allclose(predict.load_boxes(str(npy)), boxes, rtol=1e-6)
  np.save(npy, boxes[:, :3])
  with pytest.raises(predict.InputError, match=r"shape \(N, 4\)"):
    predict.load_boxes(str(npy))
  for count, message in ((NUM_FRAMES - 1, "has more frames"),
                         (NUM_FRAMES + 1, f"has {NUM_FRAMES} frames")):
    np.save(npy, boxes[np.arange(count) % NUM_FRAMES])
    with pytest.raises(predict.InputError, match=message) as e:
      predict.predict(run, path, str(tmp_path / "out"), boxes_path=str(npy),
                      animation="none")
    assert str(npy) in str(e.value) and f"has {count} boxes" in str(e.value)
  # With --max_frames only the processed frames need boxes.
  np.save(npy, boxes[:5])
  meta = predict.predict(run, path, str(tmp_path / "out"), boxes_path=str(npy),
                         max_frames=5, animation="none")
  assert meta["num_frames"] == 5


_LOAD_EXPORTED = textwrap.dedent("""
    import sys

    class _Refuse:  # the exported model must run without the project's code or Flax
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rpsm_jax", "flax", "configs"):
          raise ImportError("refused: " + name)

    sys.meta_path.insert(0, _Refuse())
    import jax
    import numpy as np
    with open(sys.argv[1], "rb") as f:
      exported = jax.export.deserialize(f.read())
    np.save(sys.argv[3], np.asarray(exported.call(np.load(sys.argv[2]))))
""")


def test_export_runs_without_the_model_code(trained_workdir, run, tmp_path):
  out = tmp_path / "export"
  result = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.apps.export", f"--workdir={trained_workdir}",
       f"--output={out}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  meta = json.loads((out / export.SIDECAR_FILE).read_text())
  s, c = run.config.model.input_size, run.config.clip_length
  assert meta["joint_names"] == list(joints.H36M_JOINTS)
  assert meta["output"]["units"] == "mm"
  assert meta["input_size"] == s and meta["clip_length"] == c
  assert meta["input"]["batch"] == "symbolic" and meta["checkpoint_step"] == run.step
  frames = np.random.default_rng(0).integers(0, 256, (3, c, s, s, 3), dtype=np.uint8)
  np.save(tmp_path / "frames.npy", frames)
  result = subprocess.run(
      [sys.executable, "-c", _LOAD_EXPORTED, str(out / export.EXPORT_FILE),
       str(tmp_path / "frames.npy"), str(tmp_path / "poses.npy")],
      capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  exported = np.load(tmp_path / "poses.npy")
  expected = jax.jit(poses.make_forward_mm(run.model, run.norm))(run.params, frames)
  assert exported.shape == (run.config.model.num_stages, 3, c, 17, 3)
  np.testing.assert_allclose(exported, np.asarray(expected), atol=1e-3)
  np.testing.assert_array_equal(exported[..., 0, :], 0.0)


def test_plot_eval_clips_writes_a_figure(trained_workdir, run, tiny_data_dir, tmp_path):
  config = synthetic_tiny.get_config()
  config.dataset.data_dir = tiny_data_dir
  pipe = input_pipeline.create_pipeline(config, trained_workdir)
  out = str(tmp_path / "eval" / "clips.png")
  assert visualize.plot_eval_clips(run.model, run.params, pipe.eval, pipe.norm, out,
                                   num_clips=2, panel_size=64) == out
  figure = cv2.imread(out)
  k, t = config.model.num_stages, config.clip_length
  assert figure.shape[0] == 64 // 4 + 2 * (1 + k) * 64
  assert figure.shape[1] == 64 // 2 + t * 64
