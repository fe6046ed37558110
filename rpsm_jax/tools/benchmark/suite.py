"""`run_benchmark`: every framework measured on one config, interleaved, into one dict."""

import contextlib
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from rpsm_jax import model_factory
from rpsm_jax.apps import streaming as streaming_lib
from rpsm_jax.tools import summary
from rpsm_jax.tools.benchmark import environment as environment_lib
from rpsm_jax.tools.benchmark import measure
from rpsm_jax.tools.benchmark import runners as runners_lib
from rpsm_jax.tools.benchmark.runners import FRAMEWORKS

TRAIN_FLOPS_PER_FORWARD = 3.0   # forward + backward (2x forward)


def run_benchmark(config, frameworks: Sequence[str] = FRAMEWORKS, batch: int = 0,
                  repeats: int = 5, steps: int = 2, warmup: int = 1,
                  torch_compile: bool = False, channels_last: bool = False,
                  pipeline: bool = False, pipeline_workers: int = 0,
                  pipeline_steps: int = 4, streaming: bool = False,
                  streaming_frames: int = 50, matmul_size: int = 0,
                  torch_threads: int = 0, isolate_torch: Optional[bool] = None,
                  log: Callable[[str], Any] = print) -> dict:
  """Measures every framework on `config` and returns the results (see the package doc).

  Args:
    config: a training config (configs/*.py).
    frameworks: any of "jax", "torch".
    batch: clips per step; 0 = config.batch_size.
    repeats: timings per framework and phase (medians and spreads over these).
    steps: steps per timing.
    warmup: untimed calls after the first one.
    torch_compile / channels_last: Torch port variants.
    pipeline: also measure the input pipeline on 1 and `pipeline_workers` threads
      (0 = the number of usable CPUs), `pipeline_steps` batches each.
    streaming: also run streaming.streaming_benchmark over `streaming_frames` frames.
    matmul_size: side of the roofline matrix product; 0 = 2048 on CPU, 8192 on GPU.
    torch_threads: torch's intra-op threads on CPUs; 0 = as many as XLA:CPU uses.
    isolate_torch: run the port in a worker process (ProcessRunner); None = on CPUs.
    log: progress messages.

  Returns:
    {"jax": {...}, "torch": {...}, "matmul_gflops_per_s": x, "config": {...},
     "environment": {...}, ...}; per framework train_/infer_ frames_per_s (median),
     *_frames_per_s_spread, *_ms_per_step, *_gflops_per_s, *_fraction_of_matmul,
     compile and first-call seconds, peak memory.
  """
  unknown = set(frameworks) - set(FRAMEWORKS)
  if unknown:
    raise ValueError(f"unknown frameworks {sorted(unknown)}; known: {FRAMEWORKS}")
  batch = batch or config.batch_size
  frames_per_step = batch * config.clip_length
  env = environment_lib.environment()
  log(f"benchmark: {env['device']} ({env['backend']}), batch {batch} clips x "
      f"{config.clip_length} frames at {config.model.input_size} px")
  model = model_factory.create_model(config.model)
  # Unoptimised HLO: the GPU compiler hides convolutions from its optimised count.
  fwd_flops = summary.forward_flops_per_frame(model, config, batch, optimized=False)
  # Random weights (compiling model.init takes 15-30 s on 2 cores), held on the host: the
  # JAX step donates its copy, the Torch port gets its own.
  params = jax.device_get(streaming_lib.random_params(model, config.model.input_size))
  data = runners_lib.synthetic_batch(config, batch)
  threads = (torch_threads or env["xla_cpu_threads"]) if env["backend"] == "cpu" else None

  matmul = runners_lib.matmul_runner(matmul_size or None)
  results: dict[str, Any] = {
      "config": {"batch_clips": batch, "clip_length": config.clip_length,
                 "frames_per_step": frames_per_step,
                 "input_size": config.model.input_size, "width": config.model.width,
                 "num_stages": config.model.num_stages, "dtype": config.model.dtype,
                 "adaption": config.model.adaption, "optimizer": config.optimizer.name},
      "forward_gflops_per_frame": fwd_flops / 1e9,
      "train_gflops_per_frame": TRAIN_FLOPS_PER_FORWARD * fwd_flops / 1e9,
      "flops_counting": "forward from XLA cost analysis; train = 3x forward",
      "repeats": repeats, "steps_per_timing": steps,
      "environment": env,
  }

  if isolate_torch is None:
    isolate_torch = env["backend"] == "cpu"
  results["torch_in_worker_process"] = bool(isolate_torch and "torch" in frameworks)
  with contextlib.ExitStack() as stack:
    runners = []
    for name in frameworks:
      start = time.perf_counter()
      if name == "jax":
        runner = runners_lib.jax_runner(config, params, data)
      else:
        options = dict(compile_model=torch_compile, channels_last=channels_last,
                       num_threads=threads)
        if isolate_torch:
          runner = runners_lib.ProcessRunner(
              "torch", runners_lib.torch_worker,
              (config, params, data, options))
        else:
          runner = runners_lib.torch_runner(config, params, data, **options)
      stack.callback(runner.close)
      runner.info["setup_s"] = time.perf_counter() - start
      # Inference first: jax's device peak counter only grows.
      for phase in ("infer", "train"):
        for key, value in runner.warm_up(phase, warmup).items():
          runner.info[f"{phase}_{key}"] = value
      log(f"{name}: ready in {time.perf_counter() - start:.1f} s")
      runners.append(runner)

    # The roofline is timed inside the same loop, so it sees the same machine load.
    matmul_times = []
    times, cpu_times = {}, {}
    for phase in ("train", "infer"):
      times[phase], cpu_times[phase] = measure.time_interleaved(runners + [matmul], phase,
                                                                steps, repeats)
      matmul_times += times[phase]["matmul"]
  rates = [matmul.info["gflop"] / t for t in matmul_times]
  roofline = float(np.median(rates))
  results["matmul_gflops_per_s"] = roofline
  results["matmul"] = {"size": matmul.info["size"], "spread": measure.stats(rates)}
  log(f"matmul roofline: {roofline:.1f} GFLOP/s ({matmul.info['size']}^3 fp32)")
  for phase in ("train", "infer"):
    for r in runners:
      fps = [frames_per_step / t for t in times[phase][r.name]]
      flops = fwd_flops * (TRAIN_FLOPS_PER_FORWARD if phase == "train" else 1.0)
      med = float(np.median(fps))
      r.info[f"{phase}_frames_per_s"] = med
      r.info[f"{phase}_frames_per_s_spread"] = measure.stats(fps)
      ms = [t * 1e3 for t in times[phase][r.name]]
      r.info[f"{phase}_ms_per_step"] = measure.stats(ms)
      # Every timing in repeat order: shows whether a slow tail is warm-up, periodic or
      # the other framework's leftovers.
      r.info[f"{phase}_ms_per_step_each"] = ms
      r.info[f"{phase}_cpu_s_per_step"] = measure.stats(cpu_times[phase][r.name])
      r.info[f"{phase}_gflops_per_s"] = med * flops / 1e9
      r.info[f"{phase}_fraction_of_matmul"] = med * flops / 1e9 / roofline
    log(f"timed {phase}: " + ", ".join(
        f"{r.name} {r.info[f'{phase}_frames_per_s']:.1f} frames/s" for r in runners))
  for r in runners:
    results[r.name] = r.info

  if pipeline:
    # Here, not at the top: the pipeline imports TFDS (seconds), for this option only.
    from rpsm_jax.tools.benchmark import input_rate  # pylint: disable=g-import-not-at-top
    workers = sorted({1, pipeline_workers or env["cpus_usable"] or 1})
    results["pipeline"] = input_rate.pipeline_throughput(config, workers, pipeline_steps)
  if streaming:
    results["streaming"] = streaming_lib.streaming_benchmark(config, streaming_frames)
  return results
