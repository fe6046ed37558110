"""The JAX vs Torch benchmark (run_benchmark, the table), run in-process on the tiny config."""

import json


import pytest

from rpsm_jax.tools import benchmark
from rpsm_jax.tools.benchmark import runners
from rpsm_jax.cpu import xla_cpu

pytest.importorskip("torch")


def _tiny_config(data_dir):
  from configs import synthetic_tiny  # pylint: disable=g-import-not-at-top
  config = synthetic_tiny.get_config()
  config.dataset.data_dir = data_dir
  config.dataset.build_if_missing = False
  return config


@pytest.fixture(scope="module")
def results(tiny_data_dir):
  config = _tiny_config(tiny_data_dir)
  # One torch thread: on a loaded 2-core machine two OpenMP threads can take seconds per
  # step, and this test checks the plumbing, not speed.
  return benchmark.run_benchmark(
      config, repeats=2, steps=1, warmup=0, pipeline=True, pipeline_steps=2,
      matmul_size=256, torch_threads=1, log=lambda _: None)


def test_json_has_the_promised_numbers(results, tiny_data_dir):
  for name in ("jax", "torch"):
    for key in ("train_frames_per_s", "infer_frames_per_s", "train_gflops_per_s",
                "infer_gflops_per_s", "train_ms_per_step", "train_first_call_s"):
      assert key in results[name], (name, key)
    assert results[name]["train_frames_per_s"] > 0
    assert results[name]["infer_frames_per_s"] > 0
    assert results[name]["train_gflops_per_s"] > 0
    spread = results[name]["train_frames_per_s_spread"]
    assert spread["min"] <= results[name]["train_frames_per_s"] <= spread["max"]
    # Steps of the tiny model take milliseconds, not minutes.
    assert results[name]["train_ms_per_step"]["median"] < 60_000
    each = results[name]["train_ms_per_step_each"]
    assert len(each) == 2 and min(each) == results[name]["train_ms_per_step"]["min"]
  assert results["matmul_gflops_per_s"] > 0
  assert results["jax"]["train_compile_s"] > 0
  assert results["forward_gflops_per_frame"] > 0
  assert results["train_gflops_per_frame"] == pytest.approx(
      3 * results["forward_gflops_per_frame"])
  assert results["jax"]["train_gflops_per_frame_xla"] > results["forward_gflops_per_frame"]
  config = _tiny_config(tiny_data_dir)
  assert results["config"]["frames_per_step"] == config.batch_size * config.clip_length
  env = results["environment"]
  assert env["backend"] == "cpu" and env["versions"]["jax"]
  assert "XLA_FLAGS" in env and env["malloc"] in ("jemalloc", "glibc-tuned", "system")
  assert results["torch"]["num_threads"] == 1
  assert results["torch_in_worker_process"]   # CPU: the port ran in its own process
  assert results["jax"]["convolutions"].startswith("auto: ")
  json.loads(json.dumps(results))   # everything is JSON-serialisable


def test_worker_failure_is_reported():
  # The worker's traceback reaches the parent as an error (here: no config to build from).
  with pytest.raises(RuntimeError, match="torch worker process failed"):
    runners.ProcessRunner("torch", runners.torch_worker, (None, {}, {}, {}))


def test_pipeline_throughput(results):
  pipe = results["pipeline"]
  assert pipe["dataset"] == "synthetic_clips/tiny"
  assert pipe["frames_per_s_1_workers"] > 0
  assert len([k for k in pipe if k.startswith("frames_per_s_")]) >= 1


def test_table_lists_both_frameworks(results):
  table = benchmark.format_table(results)
  assert "jax/torch" in table and "train frames/s" in table
  assert "input pipeline" in table


def test_unknown_framework_is_an_error(tiny_config):
  with pytest.raises(ValueError, match="unknown frameworks"):
    benchmark.run_benchmark(tiny_config, frameworks=("jax", "mxnet"))


def test_compiler_options_only_on_cpu(monkeypatch):
  if not xla_cpu._jaxlib_knows_flag():  # pylint: disable=protected-access
    pytest.skip("this jaxlib has no YNN fusion option")
  train = xla_cpu.compiler_options("train")
  assert "INDIVIDUAL_CONVOLUTION" not in train[xla_cpu.YNN_OPTION]
  assert "INDIVIDUAL_CONVOLUTION" in xla_cpu.compiler_options("infer")[xla_cpu.YNN_OPTION]
  monkeypatch.setattr("jax.default_backend", lambda: "gpu")
  assert xla_cpu.compiler_options("train") == {}
  with pytest.raises(ValueError):
    xla_cpu.compiler_options("eval")
