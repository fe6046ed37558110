"""The frozen trunk's feature cache (config.trunk_cache_copies) on the tiny dataset."""

import jax
import numpy as np
import pytest

from rpsm_jax import model_factory
from rpsm_jax import models
from rpsm_jax import poses
from rpsm_jax.pipeline import input_pipeline as ip
from rpsm_jax.training import config_checks
from rpsm_jax.training import train
from rpsm_jax.training import trunk_cache


@pytest.fixture
def pipeline(tiny_config, tmp_path):
  return ip.create_pipeline(tiny_config, str(tmp_path))


def _model_and_trunk(config):
  model = model_factory.create_model(config.model)
  params = model.init(jax.random.key(0), poses.dummy_frames(2, config.model.input_size))
  return model, params["params"]["trunk"]


def test_cache_holds_the_trunk_output_of_each_rendering(tiny_config, pipeline):
  model, trunk = _model_and_trunk(tiny_config)
  cache = trunk_cache.TrunkCache.build(model, trunk, pipeline.train, copies=2, batch_size=16)
  n = len(pipeline.train_index.sequence)
  assert cache.features.shape[:2] == (2, n)
  records = np.array([0, 5, n - 1])
  for copy in range(2):
    augs = [pipeline.train.cached_augmentation(copy, r) for r in records]
    assert all(a is not None for a in augs)            # the tiny config augments
    expected = models.trunk_of(model).apply(
        {"params": trunk}, poses.model_input(pipeline.train.render(records, augs)[0]))
    np.testing.assert_allclose(cache.features[copy, records], expected, rtol=1e-4,
                               atol=1e-5)
  # Each copy is its own draw of the augmentation.
  assert not np.allclose(cache.features[0], cache.features[1])
  got = cache.lookup(np.array([[5, -1]]), np.array([[1, 1]]))
  np.testing.assert_array_equal(got[0, 0], cache.features[1, 5])


def test_batches_without_images_keep_targets_and_draw_copies(pipeline):
  plain = pipeline.train.batch(3)
  cached = pipeline.train.batch(3, cached_copies=3)
  assert "image" not in cached and "pose_2d" not in cached
  for key in ("pose_3d", "pose_3d_mm", "mask", "record"):
    np.testing.assert_array_equal(cached[key], plain[key])
  assert cached["copy"].shape == plain["mask"].shape
  assert cached["copy"].min() >= 0 and cached["copy"].max() < 3
  np.testing.assert_array_equal(cached["copy"],
                                pipeline.train.batch(3, cached_copies=3)["copy"])
  many = np.concatenate([pipeline.train.batch(s, cached_copies=3)["copy"].ravel()
                         for s in range(8)])
  assert set(many.tolist()) == {0, 1, 2}


def test_cache_too_large_for_memory_names_the_flag(tiny_config, pipeline, monkeypatch):
  model, trunk = _model_and_trunk(tiny_config)
  monkeypatch.setattr(trunk_cache, "physical_memory_bytes", lambda: 1 << 10)
  with pytest.raises(ValueError, match="config.trunk_cache_copies=2"):
    trunk_cache.TrunkCache.build(model, trunk, pipeline.train, copies=2)


def test_cached_training_matches_running_the_trunk(tiny_config, tmp_path):
  # Without augmentation one cached copy is exactly the frames the trunk would see.
  tiny_config.augment.enabled = False
  tiny_config.model.freeze_trunk = True
  tiny_config.num_train_steps = 4
  tiny_config.trunk_cache_copies = 0
  fresh = train.train_and_evaluate(tiny_config, str(tmp_path / "fresh"))
  tiny_config.trunk_cache_copies = 1
  cached = train.train_and_evaluate(tiny_config, str(tmp_path / "cached"))
  for stage, mm in fresh["mpjpe_mm"].items():
    assert cached["mpjpe_mm"][stage] == pytest.approx(mm, rel=1e-4)


def test_cache_only_where_the_trunk_is_frozen(tiny_config):
  tiny_config.trunk_cache_copies = 4
  tiny_config.model.freeze_trunk = False
  assert train.cached_copies(tiny_config) == 0
  tiny_config.model.freeze_trunk = True
  assert train.cached_copies(tiny_config) == 4


@pytest.mark.parametrize("copies,augment,message", [
    (-1, True, "must be >= 0"), (2, False, "identical copies")])
def test_bad_cache_settings_are_refused(tiny_config, copies, augment, message):
  tiny_config.trunk_cache_copies = copies
  tiny_config.augment.enabled = augment
  with pytest.raises(ValueError, match=message):
    config_checks.check(tiny_config)
