"""2D pretraining of the trunk on heatmaps, and a 3D run starting from its trunk."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic_tiny
from data.mpii_2d import mpii_2d_dataset_builder_test as mpii_fixture
from rpsm_jax import model_factory
from rpsm_jax.training import heatmaps
from rpsm_jax.training import optim
from rpsm_jax.training import pretrain2d
from rpsm_jax.training import pretrained
from rpsm_jax.training import train


def test_heatmap_loss_and_peak_error_by_hand():
  pred = np.zeros((1, 2, 2, 2), np.float32)
  target = np.zeros_like(pred)
  target[0, 0, 1, 0] = 1.0          # joint 0 peaks at row 0, col 1
  target[0, 1, 1, 1] = 2.0          # joint 1 is not annotated: ignored
  visible = np.array([[True, False]])
  assert float(pretrain2d.heatmap_loss(pred, target, visible)) == 1.0
  pred[0, 0, 1, 0] = 1.0
  joints = np.array([[[12.0, 4.0], [0.0, 0.0]]])   # the centre of cell (row 0, col 1)
  assert pretrain2d.peak_error_px(pred, joints, visible) == 0.0


@pytest.fixture(scope="module")
def mpii_config(tmp_path_factory):
  root = tmp_path_factory.mktemp("mpii_release")
  mpii_fixture._write_release(root)  # pylint: disable=protected-access
  os.environ["MPII_2D_WORKERS"] = "0"
  config = synthetic_tiny.get_config()
  d = config.pretrain2d.dataset
  d.name, d.builder_config, d.build_if_missing = "mpii_2d", "crop128", True
  d.data_dir, d.manual_dir = str(tmp_path_factory.mktemp("tfds_mpii")), str(root)
  config.pretrain2d.batch_size = 2
  config.pretrain2d.num_train_steps = 4
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  return config


def test_pretrain2d_then_3d_trunk_from_it(mpii_config, tmp_path):
  workdir = str(tmp_path / "pretrain2d")
  results = pretrain2d.pretrain(mpii_config, workdir)
  assert results["step"] == 4 and results["num_joints"] == 16
  assert np.isfinite(results["val_heatmap_loss"]) and results["val_peak_error_px"] >= 0
  saved = json.load(open(os.path.join(workdir, "pretrain2d_results.json")))
  assert saved["step"] == 4
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]

  # A 3D model of the same width starts from that trunk.
  config = synthetic_tiny.get_config()
  model = model_factory.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, 10)
  state = train.create_train_state(config, model, tx, jax.random.key(5))
  merged = pretrained.initialize_trunk(f"checkpoint:{workdir}", state.params)
  heat = pretrain2d.HeatmapModel(16, config.model.width)
  size = config.model.input_size
  fresh = heat.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]
  changed = 0
  for a, b, c in zip(jax.tree.leaves(merged["trunk"]), jax.tree.leaves(state.params["trunk"]),
                     jax.tree.leaves(fresh["trunk"])):
    assert a.shape == b.shape == c.shape
    changed += not np.allclose(a, b)
  assert changed == len(jax.tree.leaves(merged["trunk"]))
  np.testing.assert_array_equal(merged["stage1_recurrent"]["pose"]["kernel"],
                                state.params["stage1_recurrent"]["pose"]["kernel"])


def test_targets_follow_the_augmented_joints(mpii_config, tmp_path):
  from rpsm_jax.pipeline import datasets  # pylint: disable=g-import-not-at-top
  builder = datasets.prepare(mpii_config.pretrain2d.dataset)
  loader = pretrain2d.HeatmapLoader(builder.as_data_source(split="train"), input_size=64,
                                    batch_size=3, seed=0, shuffle=True,
                                    augment=mpii_config.augment)
  batch = loader.batch(1)
  assert batch["image"].shape == (3, 64, 64, 3) and batch["heatmaps"].shape == (3, 8, 8, 16)
  expected = heatmaps.heatmaps(batch["joints_2d"], batch["visible"], 64)
  np.testing.assert_allclose(batch["heatmaps"], expected)
  np.testing.assert_array_equal(loader.batch(1)["image"], batch["image"])   # deterministic
