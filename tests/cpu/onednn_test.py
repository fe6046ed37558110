"""oneDNN convolutions through JAX's FFI (rpsm_jax.cpu.onednn) against lax.conv."""

import glob
import importlib.metadata
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import onednn

AVAILABLE, WHY = onednn.available()
needs_onednn = pytest.mark.skipif(not AVAILABLE, reason=WHY)
NHWC = ("NHWC", "HWIO", "NHWC")


def _random(shape, seed):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


# (x shape, kernel shape, strides, padding): the model's 3x3/1 and 5x5/2 layers, a 1x1,
# uneven and zero padding, odd sizes where a stride-2 window leaves pixels over, C != O.
CASES = [
    ((2, 9, 11, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1))),
    ((2, 10, 10, 4), (5, 5, 4, 6), (2, 2), ((2, 2), (2, 2))),
    ((2, 9, 9, 4), (5, 5, 4, 6), (2, 2), ((2, 2), (2, 2))),
    ((1, 7, 8, 4), (1, 1, 4, 3), (1, 1), ((0, 0), (0, 0))),
    ((3, 6, 7, 2), (3, 3, 2, 4), (1, 2), ((0, 2), (1, 0))),
    ((1, 12, 12, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1))),
]


@needs_onednn
@pytest.mark.parametrize("x_shape, w_shape, strides, padding", CASES)
def test_conv_and_gradients_match_lax(x_shape, w_shape, strides, padding):
  x, w = _random(x_shape, 0), _random(w_shape, 1)

  def ref(x, w):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

  def mine(x, w):
    return onednn.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

  y_ref, vjp_ref = jax.vjp(ref, x, w)
  dy = _random(y_ref.shape, 2)
  y, grads = jax.jit(lambda x, w, dy: (mine(x, w), jax.vjp(mine, x, w)[1](dy)))(x, w, dy)
  assert "ffi_call" in str(jax.make_jaxpr(mine)(x, w))
  for got, want in zip((y,) + tuple(grads), (y_ref,) + vjp_ref(dy)):
    assert got.shape == want.shape
    assert float(jnp.abs(got - want).max()) <= 1e-5 * float(jnp.abs(want).max())


@needs_onednn
@pytest.mark.parametrize("x_shape, w_shape, strides, padding", CASES[:3])
def test_fused_bias_relu_matches_lax(x_shape, w_shape, strides, padding):
  x, w, b = _random(x_shape, 0), _random(w_shape, 1), _random(w_shape[-1:], 3)

  def ref(x, w, b):
    return jax.nn.relu(lax.conv_general_dilated(x, w, strides, padding,
                                                dimension_numbers=NHWC) + b)

  def mine(x, w, b):
    return onednn.conv_bias_relu(x, w, b, strides, padding)

  y_ref, vjp_ref = jax.vjp(ref, x, w, b)
  dy = _random(y_ref.shape, 2)
  y, grads = jax.jit(lambda x, w, b, dy: (mine(x, w, b), jax.vjp(mine, x, w, b)[1](dy)))(
      x, w, b, dy)
  assert float((y_ref == 0).mean()) > 0.2   # the ReLU cuts
  for got, want in zip((y,) + tuple(grads), (y_ref,) + vjp_ref(dy)):
    assert got.shape == want.shape
    assert float(jnp.abs(got - want).max()) <= 1e-5 * float(jnp.abs(want).max())


@needs_onednn
def test_ineligible_convolutions_stay_on_lax(convolutions_lax_keeps):
  x, w = _random((1, 8, 8, 4), 0), _random((3, 3, 4, 4), 1)
  conv = onednn.conv_general_dilated
  ineligible = convolutions_lax_keeps(conv)
  ineligible["SAME"] = lambda x, w: conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
  ineligible["groups"] = lambda x, w: conv(x, w[:, :, :2], (1, 1), ((1, 1), (1, 1)),
                                           dimension_numbers=NHWC, feature_group_count=2)
  for name, fn in ineligible.items():
    jaxpr = str(jax.make_jaxpr(fn)(x, w))
    assert "conv_general_dilated" in jaxpr and "ffi_call" not in jaxpr, name


@needs_onednn
def test_empty_batch():
  x, w, b = jnp.zeros((0, 6, 6, 3)), _random((3, 3, 3, 4), 1), _random((4,), 2)
  conv = lambda x, w: onednn.conv(x, w, (1, 1), ((1, 1), (1, 1)))
  y, vjp = jax.vjp(conv, x, w)
  dx, dw = jax.jit(vjp)(jnp.zeros(y.shape))
  assert y.shape == (0, 6, 6, 4) and dx.shape == x.shape
  np.testing.assert_array_equal(dw, np.zeros(w.shape))
  y = onednn.conv_bias_relu(x, w, b, (1, 1), ((1, 1), (1, 1)))
  assert y.shape == (0, 6, 6, 4)
  # No input channels: the output is relu(bias) everywhere.
  y = jax.jit(lambda x, w, b: onednn.conv_bias_relu(x, w, b, (1, 1), ((1, 1), (1, 1))))(
      jnp.zeros((1, 3, 3, 0)), jnp.zeros((3, 3, 0, 4)), b)
  np.testing.assert_array_equal(y, np.broadcast_to(np.maximum(b, 0), (1, 3, 3, 4)))


@needs_onednn
def test_implementation_is_reported():
  name = onednn.implementation("weights", (2, 9, 11, 3), (3, 3, 3, 5), (2, 9, 11, 5),
                               (1, 1), (1, 1))
  assert name and "error" not in name.lower(), name


@needs_onednn
def test_model_outputs_and_gradients_match_direct(matches_direct):
  _, model, params, frames = matches_direct("onednn")
  # Every convolution of the model went to oneDNN, with bias and ReLU fused.
  jaxpr = str(jax.make_jaxpr(model.apply)({"params": params}, frames))
  assert "conv_general_dilated" not in jaxpr and "rpsm_onednn_conv_forward_bias_relu" in jaxpr


def _fresh_state(monkeypatch, tmp_path):
  monkeypatch.setitem(onednn._state, "library", None)  # pylint: disable=protected-access
  monkeypatch.setitem(onednn._state, "error", None)  # pylint: disable=protected-access
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_missing_headers_are_named(monkeypatch, tmp_path):
  _fresh_state(monkeypatch, tmp_path)
  monkeypatch.setattr(onednn, "_SYSTEM_INCLUDE_DIRS", (str(tmp_path),))
  monkeypatch.setattr(onednn, "WHEELS", ("rpsm-no-such-devel", "rpsm-no-such-lib"))
  monkeypatch.delenv("RPSM_JAX_ONEDNN_INCLUDE", raising=False)
  monkeypatch.delenv("CPATH", raising=False)
  with pytest.raises(RuntimeError, match="dnnl.hpp not found.*rpsm-no-such-devel"):
    onednn.load()
  _fresh_state(monkeypatch, tmp_path)
  monkeypatch.setenv("RPSM_JAX_ONEDNN_INCLUDE", str(tmp_path))
  with pytest.raises(RuntimeError, match="dnnl.hpp not found in RPSM_JAX_ONEDNN_INCLUDE"):
    onednn.load()


def _fake_user_install(root, version="3.9.1"):
  """A `pip install --user`-like layout outside sys.prefix: root/lib/python3.x/site-packages
  holding the two wheels' dist-info, root/include and root/lib holding their files."""
  site = root / "lib" / "python3.11" / "site-packages"
  headers = root / "include" / "oneapi" / "dnnl"
  headers.mkdir(parents=True)
  (headers / "dnnl.hpp").write_text("")
  major, minor, patch = version.split(".")
  (headers / "dnnl_version.h").write_text(
      f"#define DNNL_VERSION_MAJOR {major}\n#define DNNL_VERSION_MINOR {minor}\n"
      f"#define DNNL_VERSION_PATCH {patch}\n#define DNNL_VERSION_HASH \"abcdef0123\"\n")
  dists = {}
  for name, record in zip(onednn.WHEELS, ("../../../include/oneapi/dnnl/dnnl.hpp,,",
                                          "../../libdnnl.so,,")):
    info = site / f"{name.replace('-', '_')}-2099.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 2099.1\n")
    (info / "RECORD").write_text(record + "\n")
    dists[name] = importlib.metadata.PathDistribution(info)
  (root / "lib" / "libdnnl.so").write_text("")
  return dists


def test_wheels_are_found_through_their_installed_files(monkeypatch, tmp_path):
  dists = _fake_user_install(tmp_path / "user")
  real = importlib.metadata.distribution
  monkeypatch.setattr(importlib.metadata, "distribution",
                      lambda name: dists[name] if name in dists else real(name))
  monkeypatch.delenv("RPSM_JAX_ONEDNN_INCLUDE", raising=False)
  install = onednn.find_install()
  assert install.include == str(tmp_path / "user" / "include")
  assert install.lib == str(tmp_path / "user" / "lib")
  assert install.version == "3.9.1 (abcdef0)" and "2099.1" in install.origin
  flags = onednn._build_flags(install)  # pylint: disable=protected-access
  assert "-Wl,-rpath," + install.lib in flags and "-L" + install.lib in flags
  # The cached library's name changes with the oneDNN it is built against.
  paths = {onednn._library_path("c++", install._replace(version=v))  # pylint: disable=protected-access
           for v in ("3.9.1 (abcdef0)", "2.6.3 (52b5f10)")}
  assert len(paths) == 2


@needs_onednn
def test_loaded_onednn_is_the_one_built_against():
  install = onednn.find_install()
  assert onednn.version().split()[0] == install.version.split()[0]
  if install.lib:   # linked with an rpath: that directory's libdnnl is the one mapped
    with open("/proc/self/maps") as f:
      mapped = {line.split()[-1] for line in f if "libdnnl.so" in line}
    assert {os.path.dirname(m) for m in mapped} == {os.path.realpath(install.lib)}, mapped


def test_failed_build_is_reported_and_leaves_no_library(monkeypatch, tmp_path, caplog):
  _fresh_state(monkeypatch, tmp_path)
  headers = tmp_path / "include" / "oneapi" / "dnnl"
  headers.mkdir(parents=True)
  (headers / "dnnl.hpp").write_text("")
  monkeypatch.setenv("RPSM_JAX_ONEDNN_INCLUDE", str(tmp_path / "include"))
  monkeypatch.setenv("CXX", "false")   # a "compiler" that always fails
  with pytest.raises(RuntimeError, match="onednn_conv.cc"):
    onednn.load()
  ok, why = onednn.available()   # the reason is kept, not retried per layer
  assert not ok and "libdnnl-dev" in why
  assert not glob.glob(os.path.join(str(tmp_path), "**", "*.so"), recursive=True)
  with pytest.raises(RuntimeError, match="oneDNN convolutions unavailable"):
    convolution.make_conv("onednn", backend="cpu")
  # "auto" falls back to choosing between XLA's convolutions and Winograd, and says why.
  monkeypatch.setattr(convolution, "_logged", set())
  with caplog.at_level(logging.INFO):
    auto = convolution.make_conv("auto", backend="cpu")
  assert not auto.conv.chooser.with_onednn
  lines = [r.getMessage() for r in caplog.records if "Convolutions (" in r.getMessage()]
  assert len(lines) == 1 and "oneDNN convolutions unavailable" in lines[0], lines


@needs_onednn
def test_build_is_cached_per_machine():
  path = onednn.load()._name  # pylint: disable=protected-access
  assert os.path.dirname(path) == onednn.cache_dir()
  assert os.path.basename(path).startswith("onednn_conv_") and os.path.exists(path)


def _omp_settings(**env) -> str:
  """libgomp's settings as it prints them at load (OMP_DISPLAY_ENV), in a fresh process
  that loads oneDNN and then prints its own OMP_WAIT_POLICY."""
  environ = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
  environ.update(env, OMP_DISPLAY_ENV="TRUE")
  code = ("import os; from rpsm_jax.cpu import onednn; onednn.load(); "
          "print('after load:', os.environ.get('OMP_WAIT_POLICY'), onednn.wait_policy())")
  out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                       text=True, timeout=300, check=True)
  return out.stdout + out.stderr


@needs_onednn
def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
  # Spinning OpenMP threads collapse throughput when other processes share the cores.
  default = _omp_settings()
  assert "OMP_WAIT_POLICY = 'PASSIVE'" in default
  # Only libgomp saw it: child processes (the benchmark's Torch worker) inherit the user's.
  assert "after load: None OMP_WAIT_POLICY=PASSIVE" in default
  user = _omp_settings(OMP_WAIT_POLICY="active")
  assert "OMP_WAIT_POLICY = 'ACTIVE'" in user
  assert "after load: active the user's OMP_WAIT_POLICY=active" in user
