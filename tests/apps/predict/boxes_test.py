"""Boxes files: the formats read, the errors that name file and row, the count checks."""

import numpy as np
import pytest

from rpsm_jax.apps import predict

NUM_FRAMES = 10          # the video's frames (conftest.py)


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
