"""Tests of the synthetic_clips builder: builds the 'tiny' config (about a second).

tfds.testing.DatasetBuilderTestCase needs TensorFlow, so the builder is built with
download_and_prepare into a temporary directory and read back with as_data_source,
exactly as the input pipeline reads it.
"""

import collections

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data.synthetic_clips import motion
from data.synthetic_clips import render
from data.synthetic_clips import sequences
from data.synthetic_clips import synthetic_clips_dataset_builder as builder_lib

S = 64  # The tiny config's image size.


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  builder = builder_lib.Builder(config="tiny", data_dir=tmp_path_factory.mktemp("tfds"))
  builder.download_and_prepare()
  sources = builder.as_data_source()
  return builder, {split: [src[i] for i in range(len(src))]
                   for split, src in sources.items()}


def _text(value):
  return value.decode() if isinstance(value, bytes) else value


def _devkit_project(x, f, c, k, p):
  """Human3.6M devkit projection, written out independently of camera.py."""
  u, v = x[:, 0] / x[:, 2], x[:, 1] / x[:, 2]
  r2 = u * u + v * v
  radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
  tan = p[0] * v + p[1] * u
  ud = u * (radial + tan) + p[1] * r2
  vd = v * (radial + tan) + p[0] * r2
  return np.stack([f[0] * ud + c[0], f[1] * vd + c[1]], -1)


def _spec(subject="S1", action="Walking", seed=0, **kw):
  args = dict(seed=seed, subject=subject, action=action, take=1, num_frames=8, fps=10.,
              image_size=S, num_cameras=2)
  args.update(kw)
  return sequences.SequenceSpec(**args)


def test_file_format_and_splits(built):
  builder, data = built
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  # 2 (train) or 1 (test) subjects x 2 actions x 2 cameras x 8 frames.
  assert {split: len(ex) for split, ex in data.items()} == {"train": 64, "test": 32}
  assert builder.info.splits["train"].num_examples == 64
  subjects = {split: {_text(e["subject"]) for e in ex} for split, ex in data.items()}
  assert subjects == {"train": {"S1", "S5"}, "test": {"S9"}}
  assert {_text(e["action"]) for e in data["train"]} == {"Walking", "Jogging"}


def test_shapes_and_dtypes(built):
  _, data = built
  ex = data["train"][0]
  expected = {"pose_3d": ((17, 3), np.float32), "pose_2d": ((17, 2), np.float32),
              "box": ((4,), np.float32), "crop_box": ((4,), np.float32),
              "image": ((S, S, 3), np.uint8)}
  for name, (shape, dtype) in expected.items():
    assert ex[name].shape == shape and ex[name].dtype == dtype, name
  cam = ex["camera"]
  for name, shape in (("f", (2,)), ("c", (2,)), ("k", (3,)), ("p", (2,))):
    assert cam[name].shape == shape and cam[name].dtype == np.float32, name
  assert cam["image_size"].dtype == np.int32
  np.testing.assert_array_equal(cam["image_size"], [1000, 1000])
  assert _text(cam["name"]) in ("cam1", "cam2")
  assert int(ex["frame_index"]) == 0


def test_projection_lands_on_pose_2d(built):
  _, data = built
  for ex in data["train"] + data["test"]:
    cam = ex["camera"]
    assert (ex["pose_3d"][:, 2] > 2000).all()  # Metres away, in front of the camera.
    uv = _devkit_project(ex["pose_3d"].astype(np.float64), cam["f"], cam["c"],
                         cam["k"], cam["p"])
    crop = ex["crop_box"]
    expected = (uv - crop[:2]) * S / (crop[2] - crop[0])
    np.testing.assert_allclose(ex["pose_2d"], expected, atol=0.5)
    # The tight crop holds every joint.
    assert (ex["pose_2d"] >= 0).all() and (ex["pose_2d"] <= S).all()


def test_crop_is_the_box_grown_to_a_square(built):
  _, data = built
  for ex in data["train"]:
    box, crop = ex["box"].astype(np.float64), ex["crop_box"].astype(np.float64)
    side = max(box[2] - box[0], box[3] - box[1])
    np.testing.assert_allclose(crop[2:] - crop[:2], [side, side], rtol=1e-4)
    np.testing.assert_allclose(crop[:2] + crop[2:], box[:2] + box[2:], atol=0.05)
    assert 100 < side < 800  # A person 3-7 m from a 1150 px focal length camera.


def test_person_is_drawn(built):
  _, data = built
  stored = [e for e in data["train"] if _text(e["sequence_id"]) == "S5/Jogging.1/cam2"]
  background = sequences.film(_spec("S5", "Jogging"), draw_person=False)
  background = [e for k, e in background if k.startswith("S5/Jogging.1/cam2/")]
  assert len(stored) == len(background) == 8
  for ex, bg in zip(stored, background):
    bg_img = cv2.cvtColor(cv2.imdecode(np.frombuffer(bg["image"], np.uint8),
                                       cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    diff = np.abs(ex["image"].astype(int) - bg_img).sum(-1)
    j = np.clip(np.floor(ex["pose_2d"]).astype(int), 0, S - 1)  # Edge convention.
    # The body covers its joints; only JPEG noise is left where it is not drawn.
    assert np.median(diff[j[:, 1], j[:, 0]]) > 40
    assert (diff < 25).mean() > 0.2


def test_same_seed_same_examples_other_seed_differs(built):
  _, data = built
  again = sequences.film(_spec("S1", "Walking"))
  first = [e for e in data["train"] if _text(e["sequence_id"]).startswith("S1/Walking")]
  assert len(again) == len(first) == 16
  for (_, a), b in zip(again, first):
    np.testing.assert_array_equal(a["pose_3d"], b["pose_3d"])
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(a["image"], np.uint8),
                                    cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img, b["image"])
  other = sequences.film(_spec("S1", "Walking", seed=1))
  assert not np.allclose(other[0][1]["pose_3d"], again[0][1]["pose_3d"])
  assert other[0][1]["image"] != again[0][1]["image"]


def _bone_lengths(pose):
  parents = np.asarray(motion.PARENTS)
  return np.linalg.norm(pose[1:] - pose[parents[1:]], axis=-1)


def test_bone_lengths_fixed_per_subject(built):
  _, data = built
  per_subject = collections.defaultdict(list)
  for ex in data["train"] + data["test"]:
    per_subject[_text(ex["subject"])].append(_bone_lengths(ex["pose_3d"].astype(float)))
  means = {}
  for subject, lengths in per_subject.items():
    lengths = np.stack(lengths)
    assert lengths.std(0).max() < 0.1, subject  # mm; float32 rounding only.
    means[subject] = lengths.mean(0)
    # Plausible human proportions: thigh and shin 350-550 mm.
    assert 350 < means[subject][1] < 550 and 350 < means[subject][2] < 550
  assert np.abs(means["S1"] - means["S5"]).max() > 5
  assert np.abs(means["S1"] - means["S9"]).max() > 5


def test_frame_index_consecutive_and_keys_unique(built):
  _, data = built
  frames = collections.defaultdict(list)
  for split, examples in data.items():
    for ex in examples:
      seq = _text(ex["sequence_id"])
      subject, take, cam = seq.split("/")
      assert subject == _text(ex["subject"]) and cam == _text(ex["camera"]["name"])
      assert take == _text(ex["action"]) + ".1"
      frames[split, seq].append(int(ex["frame_index"]))
  assert len(frames) == 12  # 3 subjects x 2 actions x 2 cameras.
  for idx in frames.values():
    assert sorted(idx) == list(range(8))


def test_consecutive_frames_move(built):
  _, data = built
  seq = [e["pose_3d"] for e in data["train"] if _text(e["sequence_id"]) == "S1/Jogging.1/cam1"]
  step = np.linalg.norm(np.diff(np.stack(seq), axis=0), axis=-1).mean(-1)  # (7,) mm
  assert (step > 20).all()


@pytest.mark.parametrize("action", motion.ACTIONS)
def test_every_action_is_plausible(action):
  world = sequences.world_poses(_spec("S7", action, num_frames=30))
  assert np.isfinite(world).all()
  lowest = world[..., 2].min(-1)  # Ankles on the floor (mm), apart from jumps.
  assert (lowest > 30).all() and np.percentile(lowest, 25) < 150
  assert (np.linalg.norm(world[:, 0, :2], axis=-1) < 2500).all()  # In the capture area.
  assert np.ptp(world - world[:, :1], axis=0).max() > 100  # The body moves.


def test_drawing_is_registered_with_pose_2d():
  # A disc drawn at full-image point q must appear centred on (q - x0) * S / side in the
  # edge convention (pixel j's centre is at j + 0.5).
  crop = np.array([300., 200., 500., 400.])
  q = np.array([371.3, 266.9])
  shapes = render.Shapes(points=np.array([[q, q, q, q]]), num_points=np.array([1]),
                         radius=np.array([20.]), depth=np.array([4000.]),
                         colour=np.array([0]))
  look = render.Appearance(colours=np.full((len(render.COLOURS), 3), 255.))
  canvas = np.zeros((50, 50, 3), np.uint8)
  img = render.render(canvas, 0.05, crop, S, shapes, look, z_ref=4000.)
  w = img[..., 0].astype(float)
  jj, ii = np.mgrid[0:S, 0:S] + 0.5
  centroid = np.array([(w * ii).sum(), (w * jj).sum()]) / w.sum()
  np.testing.assert_allclose(centroid, (q - crop[:2]) * S / 200., atol=0.1)


def _images(examples):
  return [cv2.imdecode(np.frombuffer(e["image"], np.uint8), cv2.IMREAD_COLOR).astype(int)
          for _, e in examples]


def test_occluders_hide_parts_of_some_frames_and_change_nothing_else():
  plain = sequences.film(_spec("S1", "Walking", num_frames=24))
  occluded = sequences.film(_spec("S1", "Walking", num_frames=24, num_occluders=3))
  for (key, a), (key_b, b) in zip(plain, occluded):
    assert key == key_b
    for name in ("pose_3d", "pose_2d", "box", "crop_box"):
      np.testing.assert_array_equal(a[name], b[name])
  # Per frame: the share of pixels an occluder repainted (beyond JPEG noise).
  hidden = np.array([(np.abs(x - y).sum(-1) > 60).mean()
                     for x, y in zip(_images(plain), _images(occluded))])
  assert (hidden > 0.02).mean() > 0.3  # Something passes in front in many frames,
  assert (hidden < 0.005).any()        # not in all of them,
  assert hidden.max() < 0.5            # and never hides the whole crop.
  # The same draws again; none at all when there are no occluders.
  again = sequences.film(_spec("S1", "Walking", num_frames=24, num_occluders=3))
  assert [e["image"] for _, e in again] == [e["image"] for _, e in occluded]
  assert render.sample_occluders(np.random.default_rng(0), 0, 24) == []


def test_occluders_move_across_the_crop():
  occ, = render.sample_occluders(np.random.default_rng(3), 1, 48)
  masks = [render.draw_occluders(np.zeros((64, 64, 3), np.uint8), [occ], t).any(-1)
           for t in range(48)]
  seen = [t for t, m in enumerate(masks) if m.mean() > 0.01]
  assert 5 <= len(seen) < 48
  first, last = masks[seen[0]], masks[seen[-1]]
  assert (first & last).mean() < 0.5 * first.mean()  # Mostly elsewhere by then.


def test_test_split_takes_apart_from_train_takes(tmp_path):
  config = builder_lib.SyntheticClipsConfig(
      name="takes_test", num_train_subjects=2, num_test_subjects=1, num_actions=1,
      num_takes=1, num_test_takes=2, num_cameras=1, frames_per_sequence=4, image_size=S,
      num_workers=1)
  builder = builder_lib.Builder(config=config, data_dir=tmp_path)
  builder.download_and_prepare()
  sources = builder.as_data_source()
  sequence_ids = {split: sorted({_text(src[i]["sequence_id"]) for i in range(len(src))})
                  for split, src in sources.items()}
  assert sequence_ids == {"train": ["S1/Walking.1/cam1", "S5/Walking.1/cam1"],
                          "test": ["S9/Walking.1/cam1", "S9/Walking.2/cam1"]}
