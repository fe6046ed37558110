"""The CPU max-pool gives nn.max_pool's values and select-and-scatter's gradient."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rpsm_jax.models import pooling


def _reference(x, ceil_mode):
  pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2)) if ceil_mode else ((0, 0), (0, 0))
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=pad)


@pytest.mark.parametrize("shape,ceil_mode", [((2, 8, 6, 3), False), ((2, 7, 9, 4), False),
                                             ((2, 7, 9, 4), True), ((1, 6, 6, 5), True)])
@pytest.mark.parametrize("ties", [False, True])
def test_values_and_gradient_match_max_pool(shape, ceil_mode, ties):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  if ties:  # few distinct values: many windows hold their maximum more than once
    x = np.round(x).clip(-1, 1)
  x = jnp.asarray(x)
  out = pooling.max_pool_2x2(x, ceil_mode)
  ref = _reference(x, ceil_mode)
  np.testing.assert_array_equal(out, ref)
  cot = jnp.asarray(rng.normal(size=ref.shape).astype(np.float32))
  grad = jax.grad(lambda x: jnp.sum(pooling.max_pool_2x2(x, ceil_mode) * cot))(x)
  grad_ref = jax.grad(lambda x: jnp.sum(_reference(x, ceil_mode) * cot))(x)
  np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=0)


def test_jit_and_bfloat16():
  x = jnp.arange(2 * 4 * 4 * 2, dtype=jnp.bfloat16).reshape(2, 4, 4, 2)
  out = jax.jit(pooling.max_pool_2x2)(x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 2, 2, 2)
  grad = jax.grad(lambda x: jnp.sum(pooling.max_pool_2x2(x).astype(jnp.float32)))(x)
  assert grad.dtype == jnp.bfloat16
  assert float(jnp.sum(grad.astype(jnp.float32))) == out.size  # one 1 per window


def test_other_backends_use_flax(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 5, 5, 2)), jnp.float32)
  text = jax.jit(lambda x: jax.grad(
      lambda x: jnp.sum(pooling.max_pool_2x2(x, True)))(x)).lower(x).as_text()
  assert "select_and_scatter" in text or "select-and-scatter" in text
