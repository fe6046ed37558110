"""StreamingPredictor: frame-by-frame with carried LSTM state equals one whole-sequence clip."""

import jax
import numpy as np
import pytest

from configs import synthetic_tiny
from rpsm_jax import crops
from rpsm_jax import poses
from rpsm_jax import model_factory
from rpsm_jax.apps import streaming


@pytest.fixture(scope="module")
def tiny_model():
  config = synthetic_tiny.get_config()
  model = model_factory.create_model(config.model)
  params = streaming.random_params(model, config.model.input_size, seed=1)
  return config, model, params


def _frames(n, size, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_streaming_equals_whole_sequence_as_one_clip(tiny_model):
  config, model, params = tiny_model
  s = config.model.input_size
  n = 2 * config.clip_length + 1        # spans several evaluation clips
  frames = _frames(n, s)
  whole = np.asarray(model.apply({"params": params},
                                 poses.model_input(frames[None])))[:, 0]
  predictor = streaming.StreamingPredictor(model, params, s)
  streamed = np.stack([predictor(f) for f in frames], axis=1)       # (K, N, P, 3)
  assert streamed.shape == whole.shape == (config.model.num_stages, n, 17, 3)
  np.testing.assert_allclose(streamed, whole, atol=1e-5, rtol=0)
  assert predictor.frames_seen == n
  # The state matters: a clip restarted from zero state differs from the stream.
  c = config.clip_length
  restarted = np.asarray(model.apply({"params": params},
                                     poses.model_input(frames[None, c:2 * c])))
  assert np.abs(restarted[:, 0] - whole[:, c:2 * c]).max() > 1e-3
  # reset() starts a new stream: the first frames come out as the first time.
  predictor.reset()
  np.testing.assert_allclose(predictor(frames[0]), streamed[:, 0], atol=1e-6)


def test_streaming_outputs_mm_and_crops_like_predict(tiny_model):
  config, model, params = tiny_model
  s = config.model.input_size
  norm = poses.Normalization(
      minimum=np.full((17, 3), -900.0, np.float32), maximum=np.full((17, 3), 900.0,
                                                                    np.float32),
      mean_pose=np.zeros((17, 3), np.float32), root_joint=0)
  predictor = streaming.StreamingPredictor(model, params, s, norm=norm)
  big = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
  box = [30.0, 10.0, 70.0, 85.0]
  out = predictor(big, box)
  assert out.shape == (config.model.num_stages, 17, 3)
  np.testing.assert_array_equal(out[:, 0], 0.0)       # root-relative
  assert np.abs(out).max() > 1.0                       # mm, not normalised units
  cut = crops.square_crop_box(box)
  # Short side grown about the centre, corners widened to whole pixels (as in training).
  np.testing.assert_array_equal(cut, [12, 10, 88, 86])
  crop = crops.crop_and_resize(big, cut, s)
  reference = streaming.StreamingPredictor(model, params, s, norm=norm)
  np.testing.assert_allclose(reference(crop), out, atol=1e-4)


def test_streaming_benchmark_reports_rates(tiny_model):
  config, _, _ = tiny_model
  result = streaming.streaming_benchmark(config, num_frames=4, warmup=1)
  for key in ("frames_per_s", "latency_ms_median", "latency_ms_p90", "compile_s"):
    assert result[key] > 0, key
  assert result["frames"] == 4 and result["latency_ms_p90"] >= result["latency_ms_median"]
  assert result["backend"] == jax.default_backend()
