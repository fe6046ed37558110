"""kill_resume's comparison (issue 18): NaN is a difference, not hidden by max()."""

import math

import jax
import numpy as np

from configs import synthetic_tiny
from rpsm_jax import workdir as workdir_lib
from rpsm_jax.tools import kill_resume
from rpsm_jax.training import checkpoints
import pytest

# Whole trainings in subprocesses: the first CI Python runs them, the second skips them.
pytestmark = pytest.mark.slow


def test_difference_is_nan_aware():
  a = {"a": np.zeros(3), "b": np.array([1.0, np.nan, np.inf])}
  assert kill_resume.difference(a, a) == 0.0          # the same NaN and inf: equal
  b = {"a": np.zeros(3), "b": np.array([1.0, 2.0, np.inf])}
  assert kill_resume.difference(a, b) == math.inf
  assert kill_resume.difference(b, a) == math.inf
  c = {"a": np.array([0.0, 0.5, 0.0]), "b": np.array([1.0, np.nan, np.inf])}
  assert kill_resume.difference(a, c) == 0.5
  assert kill_resume.difference(a, {"a": np.zeros(4), "b": a["b"]}) == math.inf


def test_compare_fails_on_a_corrupted_state(tmp_path):
  config = synthetic_tiny.get_config()
  config.model.conv_algorithm = "direct"
  # Saved values need not come from a model: zeros of the train state's shapes.
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                       kill_resume.abstract_state(config))
  # One NaN in a late leaf: max() over per-leaf maxima started from earlier 0.0 hid it.
  leaves, tree = jax.tree.flatten(state.params)
  bad = np.array(leaves[-1])
  bad.reshape(-1)[0] = np.nan
  corrupted = state.replace(params=jax.tree.unflatten(tree, leaves[:-1] + [bad]))
  for name, s in (("reference", state), ("interrupted", corrupted)):
    workdir = str(tmp_path / name)
    manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
    manager.save(6, s)
    manager.close()
    workdir_lib.save_config(config, workdir)
  assert kill_resume.compare(str(tmp_path / "reference"), str(tmp_path / "reference")) == 0
  assert kill_resume.compare(str(tmp_path / "reference"),
                             str(tmp_path / "interrupted")) == math.inf
