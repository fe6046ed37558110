"""Shared fixtures: the 'tiny' synthetic dataset, built once per test session."""

import rpsm_jax  # noqa: F401  (XLA:CPU options before JAX starts)

import pytest

from configs import synthetic_tiny
from rpsm_jax import datasets


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
