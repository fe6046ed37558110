"""--mode=summary's numbers: parameter counts and the one forward FLOPs count."""

import jax
import pytest

from configs import synthetic_tiny
from rpsm_jax import model_factory
from rpsm_jax.tools import summary


def test_flops_of_compiled_and_unoptimised_hlo_agree_on_cpu():
  config = synthetic_tiny.get_config()
  model = model_factory.create_model(config.model)
  variables, frames = summary.abstract_variables(model, config, batch=2)
  s = config.model.input_size
  assert frames.shape == (2, config.clip_length, s, s, 3)
  counts = summary.count_params(variables["params"])
  assert counts["total"] == sum(counts["by_group"].values()) > 0
  compiled = summary.forward_flops_per_frame(model, config)
  assert compiled > 0
  if jax.default_backend() == "cpu":   # the GPU compiler hides convolutions from its count
    assert summary.forward_flops_per_frame(model, config, optimized=False) == \
        pytest.approx(compiled, rel=1e-3)   # 0.03% apart on this config
