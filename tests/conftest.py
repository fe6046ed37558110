"""Shared fixtures: the 'tiny' synthetic dataset, built once per test session."""

import atexit
import os
import shutil
import tempfile

# One persistent XLA compilation cache for the session and the processes its tests start
# (set before JAX is imported): most tests compile the same tiny-config programs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="rpsm_test_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

from rpsm_jax import model_factory  # noqa: E402
from rpsm_jax.cpu import xla_cpu

xla_cpu.configure()   # as the entry points do, before JAX starts

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic_tiny
from rpsm_jax.pipeline import datasets


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A TFDS data_dir holding synthetic_clips/tiny, prepared once."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = synthetic_tiny.get_config()
  config.dataset.data_dir = data_dir
  datasets.prepare(config.dataset)
  return data_dir


@pytest.fixture
def tiny_config(tiny_data_dir):
  config = synthetic_tiny.get_config()
  config.dataset.data_dir = tiny_data_dir
  config.dataset.build_if_missing = False
  return config


def _matches_direct(algorithm: str, tile: int = 0, tol: float = 1e-4):
  """The tiny config's model with `algorithm` convolutions against lax's, from the same
  parameters: outputs and every parameter gradient agree to `tol` (relative to each
  array's largest value). Returns (direct model, model, params, frames)."""
  config = synthetic_tiny.get_config()
  config.model.conv_algorithm = "direct"
  direct_model = model_factory.create_model(config.model)
  config.model.conv_algorithm = algorithm
  config.model.winograd_tile = tile
  model = model_factory.create_model(config.model)
  s = config.model.input_size
  frames = jax.random.uniform(jax.random.PRNGKey(0), (2, config.clip_length, s, s, 3)) - 0.5
  params = direct_model.init(jax.random.PRNGKey(1), frames)["params"]

  def loss(m):
    return lambda p: jnp.sum(m.apply({"params": p}, frames) ** 2)

  want = direct_model.apply({"params": params}, frames)
  got = jax.jit(model.apply)({"params": params}, frames)
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(jnp.abs(want).max()))
  grad_d = jax.grad(loss(direct_model))(params)
  grad_m = jax.jit(jax.grad(loss(model)))(params)
  for (path, gd), gm in zip(jax.tree_util.tree_leaves_with_path(grad_d),
                            jax.tree.leaves(grad_m)):
    scale = float(jnp.abs(gd).max()) + 1e-6
    assert float(jnp.abs(gm - gd).max()) <= tol * scale, jax.tree_util.keystr(path)
  return direct_model, model, params, frames


@pytest.fixture
def matches_direct():
  return _matches_direct


def _convolutions_lax_keeps(conv):
  """Calls of a conv_general_dilated drop-in that every replacement must leave to lax:
  {name: fn(x, w)} for x (1, 8, 8, 4) NHWC and w (3, 3, 4, 4) HWIO."""
  nhwc, pad1 = ("NHWC", "HWIO", "NHWC"), ((1, 1), (1, 1))
  return {
      "dilated": lambda x, w: conv(x, w, (1, 1), ((2, 2), (2, 2)), rhs_dilation=(2, 2),
                                   dimension_numbers=nhwc),
      "bfloat16": lambda x, w: conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                                    (1, 1), pad1, dimension_numbers=nhwc),
      "NCHW": lambda x, w: conv(x[:, :4, :4], w, (1, 1), pad1,
                                dimension_numbers=("NCHW", "HWIO", "NCHW")),
  }


@pytest.fixture
def convolutions_lax_keeps():
  return _convolutions_lax_keeps


@pytest.fixture(scope="session")
def trained_workdir(tiny_data_dir, tmp_path_factory):
  """A run of synthetic_tiny trained for 2 steps (one checkpoint), once per session."""
  from rpsm_jax.training import train  # pylint: disable=g-import-not-at-top
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
  """trained_workdir restored for inference (rpsm_jax.apps.inference.Run)."""
  from rpsm_jax.apps import inference  # pylint: disable=g-import-not-at-top
  return inference.load_run(trained_workdir)
