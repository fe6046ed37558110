"""conv_algorithm "auto"'s whole-step check (rpsm_jax.cpu.step_check)."""

import json
import time

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax
import pytest

from rpsm_jax.cpu import autotune
from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import onednn
from rpsm_jax.cpu import step_check


def _sleeper(ms, calls):
  def run(name):
    def once():
      calls.append(name)
      time.sleep(ms[name] / 1e3)
    return once
  return run


@pytest.fixture
def quiet(monkeypatch):
  monkeypatch.setattr(autotune, "cpu_seconds", lambda: (0.0, 0.0))
  monkeypatch.setattr(step_check, "_unsaved", {})


def test_keeps_the_faster_step_and_caches_it(tmp_path, quiet):
  path = str(tmp_path / "steps.json")
  calls = []
  ms = {"auto": 30.0, "onednn": 10.0}
  assert step_check.choose("test", "k1", _sleeper(ms, calls), path) == "onednn"
  per = step_check.WARMUP + 1 + step_check.REPEATS
  assert calls.count("auto") == calls.count("onednn") == per
  entry = json.load(open(path))["steps"]["k1"]
  assert entry["choice"] == "onednn" and entry["ms"]["auto"] > entry["ms"]["onednn"]
  # Cached: another check of the same program runs nothing; another program is timed.
  assert step_check.choose("test", "k1", _sleeper({}, calls := []), path) == "onednn"
  assert not calls
  ms = {"auto": 10.0, "onednn": 30.0}
  assert step_check.choose("test", "k2", _sleeper(ms, []), path) == "auto"
  assert set(json.load(open(path))["steps"]) == {"k1", "k2"}


def test_a_check_beside_other_work_is_not_cached(tmp_path, monkeypatch):
  monkeypatch.setattr(step_check, "_unsaved", {})
  busy = {"all": 0.0}

  def cpu_seconds():   # other processes on two cores all along
    busy["all"] += 1.0
    return busy["all"], 0.0
  monkeypatch.setattr(autotune, "cpu_seconds", cpu_seconds)
  monkeypatch.setattr(autotune, "other_cores", lambda *a: 2.0)
  path = str(tmp_path / "steps.json")
  assert step_check.choose("test", "k", _sleeper({"auto": 1.0, "onednn": 5.0}, []),
                           path) == "auto"
  assert "k" not in step_check._read(path)   # pylint: disable=protected-access
  calls = []
  assert step_check.choose("test", "k", _sleeper({}, calls), path) == "auto"
  assert not calls   # the run keeps its choice without timing again


def test_path_sits_beside_the_layer_choices(monkeypatch, tmp_path):
  monkeypatch.setenv("RPSM_JAX_CONV_CHOICES", str(tmp_path / "mine.json"))
  assert step_check.default_path() == str(tmp_path / "mine_steps.json")


class _Net(nn.Module):
  conv: convolution.Convolution = None

  @nn.compact
  def __call__(self, x):
    return nn.Conv(8, (3, 3), conv_general_dilated=self.conv)(x).sum()


@pytest.mark.skipif(not onednn.available()[0], reason=onednn.available()[1])
def test_choose_model_runs_copies_and_returns_the_winner(tmp_path, quiet, monkeypatch):
  monkeypatch.setenv("RPSM_JAX_CONV_CHOICES", str(tmp_path / "layers.json"))
  model = _Net(conv=convolution.make_conv("auto"))
  x = jnp.ones((2, 12, 12, 16))
  params = model.init(jax.random.key(0), x)["params"]
  state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                        tx=optax.sgd(0.1))

  def step(state, x):
    loss, grads = jax.value_and_grad(lambda p: state.apply_fn({"params": p}, x))(
        state.params)
    return state.apply_gradients(grads=grads), loss
  step_fn = jax.jit(step, donate_argnums=0)
  before = jax.tree.map(lambda a: a.copy(), state.params)
  ran = []

  def choose(label, key, run, path=None):   # runs both candidates once, picks oneDNN
    for name in step_check.CANDIDATES:
      run(name)()
      ran.append(name)
    return "onednn"
  monkeypatch.setattr(step_check, "choose", choose)
  chosen, new_state = step_check.choose_model("test", model, step_fn, state, x)
  assert ran == list(step_check.CANDIDATES)
  assert isinstance(chosen.conv.conv, convolution.OnednnConv)
  assert new_state.apply_fn == chosen.apply
  # The run's own state was not donated or changed by the check's steps.
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), new_state.params,
                                   before))
  new_state, _ = step_fn(new_state, x)
  assert int(new_state.step) == 1


def test_a_run_keeps_its_step_choice(tmp_path, quiet):
  path = str(tmp_path / "steps.json")
  record = str(tmp_path / "run" / "conv_choices.json")
  with autotune.pinned(record):
    assert step_check.choose("test", "k", _sleeper({"auto": 1.0, "onednn": 20.0}, []),
                             path) == "auto"
  assert json.load(open(record))["steps"] == {"k": "auto"}
  # The machine's cache changes; the run, restarted, times nothing and keeps its choice.
  autotune.write_json(path, {"steps": {"k": {"choice": "onednn"}}})
  calls = []
  with autotune.pinned(record):
    assert step_check.choose("test", "k", _sleeper({}, calls), path) == "auto"
  assert not calls


def test_a_slow_step_is_not_checked(tmp_path, quiet, monkeypatch):
  monkeypatch.setattr(step_check, "MAX_STEP_S", 0.01)
  calls = []
  path = str(tmp_path / "steps.json")
  assert step_check.choose("test", "k", _sleeper({"auto": 30.0, "onednn": 1.0}, calls),
                           path) == "auto"
  assert calls == ["auto", "auto"]   # compiled and timed once; oneDNN never built or run
  assert json.load(open(path))["steps"]["k"]["unchecked_step_s"] > 0.01
