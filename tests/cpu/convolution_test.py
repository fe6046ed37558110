"""Convolution algorithm choice (rpsm_jax.cpu.convolution.make_conv, config.model.conv_algorithm)."""

import json
import logging

import jax
from jax import lax
import jax.numpy as jnp
import pytest

from rpsm_jax.cpu import autotune
from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import onednn

NHWC = ("NHWC", "HWIO", "NHWC")


def test_accelerators_keep_lax():
  for backend in ("gpu", "tpu"):
    assert convolution.make_conv("auto", backend=backend) is None
  assert convolution.make_conv("direct") is None
  with pytest.raises(ValueError, match="CPUs only"):
    convolution.make_conv("onednn", backend="gpu")


def test_bad_values_name_the_field():
  with pytest.raises(ValueError, match="config.model.conv_algorithm"):
    convolution.make_conv("fft")
  with pytest.raises(ValueError, match="config.model.winograd_tile"):
    convolution.make_conv("winograd", tile=3)


def _ops(conv, x_shape, w_shape, strides=(1, 1), padding=((1, 1), (1, 1))):
  x = jax.ShapeDtypeStruct(x_shape, "float32")
  w = jax.ShapeDtypeStruct(w_shape, "float32")
  jaxpr = str(jax.make_jaxpr(
      lambda x, w: conv(x, w, strides, padding, dimension_numbers=NHWC))(x, w))
  return {name for name in ("ffi_call", "conv_general_dilated", "dot_general")
          if name in jaxpr}


def _chooser(tmp_path, choices, with_onednn=None):
  """An autotune.Chooser reading `choices` ({layer_key: {"choice", "ms"}}) from its file."""
  path = tmp_path / "choices.json"
  path.write_text(json.dumps({"layers": choices}))
  if with_onednn is None:
    with_onednn = onednn.available()[0]
  return autotune.Chooser(with_onednn=with_onednn, path=str(path))


def _auto(chooser):
  conv = convolution.ChosenConv(chooser)
  return convolution.Convolution(conv, conv_bias_relu=conv.conv_bias_relu)


PAD1 = ((1, 1), (1, 1))


@pytest.mark.skipif(not onednn.available()[0], reason=onednn.available()[1])
def test_auto_runs_what_was_measured_fastest(tmp_path, monkeypatch):
  shapes = {"onednn": ((40, 80, 80, 16), (3, 3, 16, 16)),
            "winograd": ((5, 46, 46, 128), (3, 3, 128, 128)),
            "xla": ((40, 10, 10, 128), (3, 3, 128, 128))}
  ms = {"onednn": 3.0, "winograd": 2.0, "xla": 1.0}
  choices = {autotune.layer_key(x, w, (1, 1), PAD1, False):
             {"choice": name, "ms": ms if min(w[2:]) >= 64 else
              {"onednn": 1.0, "xla": 2.0}} for name, (x, w) in shapes.items()}
  monkeypatch.setattr(autotune, "time_layer", _no_timing)
  auto = _auto(_chooser(tmp_path, choices))
  want = {"onednn": {"ffi_call"}, "winograd": {"dot_general"}, "xla": {"conv_general_dilated"}}
  for name, (x, w) in shapes.items():
    assert _ops(auto, x, w) == want[name], name


def _no_timing(*args, **kwargs):
  raise AssertionError("timed a layer whose choice is cached")


def _quiet(monkeypatch):
  """No other process uses the CPUs while layers are timed (pytest's other workers may)."""
  monkeypatch.setattr(autotune, "cpu_seconds", lambda: (0.0, 0.0))


def test_auto_times_new_layers_once_and_caches_them(tmp_path, monkeypatch, caplog):
  monkeypatch.setattr(autotune, "ONEDNN_CALL_COST_S", 0.0)   # the fastest alone wins
  _quiet(monkeypatch)
  chooser = _chooser(tmp_path, {})
  auto = _auto(chooser)
  x, w = (2, 8, 8, 64), (3, 3, 64, 64)
  with caplog.at_level(logging.INFO):
    ops = _ops(auto, x, w)
  saved = json.loads((tmp_path / "choices.json").read_text())
  entry = saved["layers"][autotune.layer_key(x, w, (1, 1), PAD1, False)]
  want = {"winograd", "xla"} | ({"onednn"} if chooser.with_onednn else set())
  # The stored times are rounded to 1 us, so a near tie may store equal times for both.
  assert set(entry["ms"]) == want and entry["ms"][entry["choice"]] == min(entry["ms"].values())
  assert all(v > 0 for v in entry["ms"].values())
  assert saved["cpu"] == autotune.cpu_description()
  assert ops == {"onednn": {"ffi_call"}, "winograd": {"dot_general"},
                 "xla": {"conv_general_dilated"}}[entry["choice"]]
  assert any("->" in r.getMessage() for r in caplog.records)
  # Narrow layers do not time Winograd (autotune.WINOGRAD_MIN_CHANNELS).
  assert "winograd" not in chooser.candidates(jax.ShapeDtypeStruct((2, 8, 8, 16), "float32"),
                                              jax.ShapeDtypeStruct((3, 3, 16, 16), "float32"),
                                              (1, 1), PAD1)
  # Another process (a new chooser on the same file) reads the choice without timing.
  monkeypatch.setattr(autotune, "time_layer", _no_timing)
  assert _ops(_auto(autotune.Chooser(chooser.with_onednn, path=chooser.path)), x, w) == ops


def test_auto_charges_onednn_its_per_call_cost(tmp_path, monkeypatch):
  # autotune.ONEDNN_CALL_COST_S: a small win alone is a loss inside a step.
  monkeypatch.setattr(autotune, "ONEDNN_CALL_COST_S", 0.5e-3)
  _quiet(monkeypatch)
  timed = {}
  monkeypatch.setattr(autotune, "time_layer", lambda names, *args, **kw: dict(timed))
  chooser = _chooser(tmp_path, {}, with_onednn=True)
  x = jax.ShapeDtypeStruct((40, 10, 10, 32), "float32")
  for w_shape, seconds, want in (((3, 3, 32, 32), {"onednn": 1.0e-3, "xla": 1.4e-3}, "xla"),
                                 ((3, 3, 32, 16), {"onednn": 1.0e-3, "xla": 2.6e-3},
                                  "onednn")):
    timed.clear()
    timed.update(seconds)
    w = jax.ShapeDtypeStruct(w_shape, "float32")
    assert chooser.choose(x, w, (1, 1), PAD1, relu=True) == want, seconds
    entry = json.loads((tmp_path / "choices.json").read_text())["layers"][
        autotune.layer_key(x.shape, w_shape, (1, 1), PAD1, True)]
    assert entry["choice"] == want and entry["ms"] == {k: v * 1e3 for k, v in seconds.items()}


def test_auto_keeps_choices_timed_beside_other_work_to_this_run(tmp_path, monkeypatch,
                                                                 caplog):
  clock = {"wall": 100.0, "busy": 0.0, "own": 0.0}   # seconds: wall, all CPUs, this process
  monkeypatch.setattr(autotune.time, "monotonic", lambda: clock["wall"])
  monkeypatch.setattr(autotune, "cpu_seconds", lambda: (clock["busy"], clock["own"]))

  def timing(other_cores):
    """A fake time_layer taking 2 s, this process on one core, others on `other_cores`."""
    def time_layer(*args, **kwargs):
      clock["wall"] += 2.0
      clock["own"] += 2.0
      clock["busy"] += 2.0 * (1 + other_cores)
      return {"onednn": 3e-3, "xla": 1e-3}
    return time_layer

  monkeypatch.setattr(autotune, "time_layer", timing(other_cores=1.0))
  chooser = _chooser(tmp_path, {}, with_onednn=True)
  x = jax.ShapeDtypeStruct((40, 10, 10, 32), "float32")
  w = jax.ShapeDtypeStruct((3, 3, 32, 32), "float32")
  key = autotune.layer_key(x.shape, w.shape, (1, 1), PAD1, True)
  with caplog.at_level(logging.WARNING):
    assert chooser.choose(x, w, (1, 1), PAD1, relu=True) == "xla"
  assert any("1.0 cores busy" in r.getMessage() for r in caplog.records)
  assert key not in json.loads((tmp_path / "choices.json").read_text())["layers"]
  # This run keeps its choice without timing again ...
  monkeypatch.setattr(autotune, "time_layer", _no_timing)
  assert chooser.choose(x, w, (1, 1), PAD1, relu=True) == "xla"
  assert chooser.choices() == {key: "xla"}
  # ... and the next run, on a quiet machine, times the layer again and saves it.
  monkeypatch.setattr(autotune, "time_layer", timing(other_cores=0.0))
  again = autotune.Chooser(with_onednn=True, path=chooser.path)
  assert again.choose(x, w, (1, 1), PAD1, relu=True) == "xla"
  entry = json.loads((tmp_path / "choices.json").read_text())["layers"][key]
  assert entry["other_cores"] == 0.0


def test_other_cores_from_cpu_readings():
  assert autotune.other_cores((10.0, 4.0), (13.0, 5.0), 2.0) == 1.0   # 3 busy, 1 ours
  assert autotune.other_cores((10.0, 4.0), (11.0, 5.0), 2.0) == 0.0
  assert autotune.other_cores(None, (1.0, 1.0), 2.0) is None
  assert autotune.other_cores((0.0, 0.0), (1.0, 0.0), 0.01) is None   # too short to tell
  before = autotune.cpu_seconds()
  if before is not None:                           # Linux: real readings, sensible values
    assert before[0] >= 0 and before[1] > 0


def test_auto_fused_layer_matches_lax(tmp_path):
  """Whatever the choice, conv_bias_relu computes relu(conv + bias) (values and grads)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 64))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 64, 64)) * 0.05
  b = jax.random.normal(jax.random.PRNGKey(2), (64,))
  key = autotune.layer_key(x.shape, w.shape, (1, 1), PAD1, True)

  def ref(x, w, b):
    return jax.nn.relu(lax.conv_general_dilated(x, w, (1, 1), PAD1, dimension_numbers=NHWC)
                       + b)

  names = ["winograd", "xla"] + (["onednn"] if onednn.available()[0] else [])
  for name in names:
    chooser = _chooser(tmp_path, {key: {"choice": name, "ms": {n: 1.0 for n in names}}})
    fused = _auto(chooser).conv_bias_relu
    mine = lambda x, w, b: fused(x, w, b, (1, 1), PAD1)
    y, vjp = jax.vjp(mine, x, w, b)
    y_ref, vjp_ref = jax.vjp(ref, x, w, b)
    for got, want in zip((y,) + vjp(y_ref), (y_ref,) + vjp_ref(y_ref)):
      assert float(jnp.abs(got - want).max()) <= 1e-4 * float(jnp.abs(want).max()), name


def test_run_log_says_once_which_convolutions(monkeypatch, caplog, tmp_path):
  monkeypatch.setattr(convolution, "_logged", set())
  monkeypatch.setenv("RPSM_JAX_CONV_CHOICES", str(tmp_path / "c.json"))
  with caplog.at_level(logging.INFO):
    for _ in range(2):
      convolution.make_conv("auto", backend="cpu")
    convolution.make_conv("direct", backend="gpu")
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Convolutions")]
  assert len(lines) == 2, lines
  assert "conv_algorithm=auto" in lines[0] and autotune.cpu_description()["isa"] in lines[0]
  assert "timed once per layer shape" in lines[0] and str(tmp_path / "c.json") in lines[0]
  if not onednn.available()[0]:
    assert "oneDNN convolutions unavailable" in lines[0]
  assert "conv_algorithm=direct, gpu" in lines[1]


def test_describe_names_what_runs(tmp_path):
  assert convolution.describe(None).startswith("lax")
  assert convolution.describe(convolution.make_conv("winograd")) == "Winograd + lax"
  assert convolution.describe(convolution.Convolution(convolution.OnednnConv())).startswith(
      "oneDNN")
  described = convolution.describe(_auto(_chooser(tmp_path, {}, with_onednn=True)))
  assert "oneDNN, Winograd, XLA" in described and "timed on this CPU" in described


def test_a_run_keeps_the_choices_it_recorded(tmp_path, monkeypatch):
  """A restarted run reads its own choices first (autotune.pinned), so it runs the same
  convolutions whatever the machine's cache says meanwhile."""
  _quiet(monkeypatch)
  x = jax.ShapeDtypeStruct((40, 10, 10, 32), "float32")
  w = jax.ShapeDtypeStruct((3, 3, 32, 32), "float32")
  key = autotune.layer_key(x.shape, w.shape, (1, 1), PAD1, True)
  record = tmp_path / "run" / "conv_choices.json"
  monkeypatch.setattr(autotune, "time_layer", lambda *a, **kw: {"onednn": 3e-3, "xla": 1e-3})
  with autotune.pinned(str(record)):
    assert _chooser(tmp_path, {}, with_onednn=True).choose(x, w, (1, 1), PAD1, True) == "xla"
  assert json.loads(record.read_text())["layers"] == {key: "xla"}
  # The machine's cache now says oneDNN (re-timed elsewhere): the run keeps XLA ...
  monkeypatch.setattr(autotune, "time_layer", _no_timing)
  other = {key: {"choice": "onednn", "ms": {"onednn": 1.0, "xla": 2.0}}}
  with autotune.pinned(str(record)):
    assert _chooser(tmp_path, other, with_onednn=True).choose(x, w, (1, 1), PAD1,
                                                              True) == "xla"
  # ... while another run (no record) takes the machine's choice.
  assert _chooser(tmp_path, other, with_onednn=True).choose(x, w, (1, 1), PAD1,
                                                            True) == "onednn"
  # An unreadable record is set aside with a warning, not a crash.
  record.write_text("{not json")
  with autotune.pinned(str(record)):
    assert _chooser(tmp_path, other, with_onednn=True).choose(x, w, (1, 1), PAD1,
                                                              True) == "onednn"
  assert json.loads(record.read_text())["layers"] == {key: "onednn"}
