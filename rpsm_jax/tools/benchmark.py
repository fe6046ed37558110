r"""`python -m rpsm_jax.benchmark`: JAX vs the Torch port, side by side, in one run.

  python -m rpsm_jax.benchmark --config=configs/synthetic.py [--frameworks=jax,torch]
      [--batch=N] [--repeats=N] [--steps=N] [--json=FILE] [--torch_compile]
      [--channels_last] [--pipeline] [--streaming] [--torch_threads=N]
      [--allocator=auto|jemalloc|system] [--notorch_worker] [--config.field=value ...]

For the same config, batch (clips of config.clip_length frames), input size and weights,
each framework runs
- the train step: forward, the paper's loss, backward and the optimiser update. JAX runs
  `train.compile_train_step` (what training runs); Torch runs the port with the matching
  torch.optim optimiser;
- inference: the forward pass alone.
Both take the uint8 frames as the pipeline delivers them (already on the device) and
convert them inside the step. Timings of the frameworks are interleaved repeat by repeat,
so a noisy, shared machine slows both alike; each timing runs `steps` steps back to back
and the table gives the median and [min, max] over `repeats` timings after warm-up. On
CPUs the port runs in a worker process (ProcessRunner: the two would otherwise share one
OpenMP runtime and slow each other), driven from this one.

FLOPs: forward FLOPs per frame come from XLA's cost analysis of the forward pass (its
unoptimised HLO, so GPUs count convolutions too; on CPUs this is
summary.forward_flops_per_frame's number); a train step counts 3x forward (backward = 2x
forward, the usual model-FLOPs convention; the optimiser is negligible), for both
frameworks alike. XLA's own count of the train step is reported beside it. The roofline is
a jitted square fp32 jnp.dot (2048 on CPUs, 8192 on GPUs) at JAX's default precision (TF32
tensor cores on recent NVIDIA GPUs), timed inside the same interleaved loop, so it sees the
same machine load.

Memory: on CPUs, the rise of the process's resident set over the warm-up calls (VmHWM
after resetting it through /proc/self/clear_refs, minus VmRSS before), after returning
freed memory to the OS (glibc malloc_trim or jemalloc purge): activations, gradients and
temporaries, not the parameters already resident. On GPUs, torch.cuda.max_memory_allocated
and, for JAX, XLA's buffer assignment of the compiled step (jax's own peak counter cannot
be reset and also holds compile-time autotuning scratch; it is in the JSON). XLA's buffer
peak is reported on every backend.

CPU runs restart themselves with jemalloc preloaded when the system has it
(--allocator=auto, the default, when no accelerator plugin is installed;
`apt-get install libjemalloc2`): XLA:CPU allocates its
buffers per call and glibc maps large ones fresh each time; jemalloc made the synthetic
train step ~10% and inference ~20% faster. --allocator=system keeps the process's malloc.
"""

import contextlib
import ctypes
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

import jax
import jax.numpy as jnp
import numpy as np

from rpsm_jax import poses
from rpsm_jax import model_factory
from rpsm_jax import parallel
from rpsm_jax.cpu import convolution
from rpsm_jax.training import optim
from rpsm_jax.tools import summary
from rpsm_jax.training import train
from rpsm_jax.cpu import xla_cpu

FRAMEWORKS = ("jax", "torch")
TRAIN_FLOPS_PER_FORWARD = 3.0   # forward + backward (2x forward)
# Pause before each timing: OpenMP threads (the port's, oneDNN's) spin-wait for a few ms
# after their last parallel region and would take CPU from the next runner's timing.
_SETTLE_S = 0.05


# --------------------------------------------------------------------------- measuring


def _read_status(field: str) -> Optional[int]:
  """A /proc/self/status memory field (VmRSS, VmHWM) in bytes; None off Linux."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _release_free_memory() -> None:
  """Returns memory the allocator holds but nobody uses to the OS, so that a peak measured
  next is not hidden by pages an earlier phase left mapped."""
  libc = ctypes.CDLL(None)
  mallctl = getattr(libc, "mallctl", None)
  if mallctl is not None:  # jemalloc preloaded: purge every arena (MALLCTL_ARENAS_ALL)
    mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))
  elif hasattr(libc, "malloc_trim"):
    libc.malloc_trim(ctypes.c_size_t(0))


class _HostPeak:
  """Peak rise of the resident set during a `with` block, in bytes.

  Resets the kernel's high-water mark (VmHWM) on entry; where that is not allowed, samples
  VmRSS every 5 ms in a thread instead.
  """

  def __enter__(self):
    _release_free_memory()
    self.base = _read_status("VmRSS") or 0
    self._sampled = 0
    self._stop = threading.Event()
    self._thread = None
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    except OSError:
      self._thread = threading.Thread(target=self._sample, daemon=True)
      self._thread.start()
    return self

  def _sample(self):
    while not self._stop.wait(0.005):
      self._sampled = max(self._sampled, _read_status("VmRSS") or 0)

  def __exit__(self, *exc):
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      peak = self._sampled
    else:
      peak = _read_status("VmHWM") or 0
    self.bytes = max(0, peak - self.base)
    return False


def _stats(values: Sequence[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
          "q25": float(np.percentile(v, 25)), "q75": float(np.percentile(v, 75))}


def matmul_runner(size: Optional[int] = None) -> "Runner":
  """A square fp32 jnp.dot on jax's default device: the roofline, timed like a step."""
  on_gpu = jax.default_backend() == "gpu"
  n = size or (8192 if on_gpu else 2048)
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  holder = {"out": dot(a, b)}

  def run():
    holder["out"] = dot(a, b)

  def sync():
    holder["out"].block_until_ready()

  sync()
  return Runner("matmul", run, run, sync, {"size": n, "gflop": 2 * n ** 3 / 1e9})


# --------------------------------------------------------------------------- runners


@dataclasses.dataclass
class Runner:
  """One framework's compiled train step and forward pass on a fixed batch.

  `train()` / `infer()` dispatch one step; `sync()` waits for everything dispatched.
  """
  name: str
  train: Callable[[], None]
  infer: Callable[[], None]
  sync: Callable[[], None]
  info: dict

  def warm_up(self, phase: str, calls: int) -> dict:
    return _warm_up(self, phase, calls)

  def time(self, phase: str, steps: int) -> tuple[float, float]:
    """Wall and process CPU seconds per step over `steps` steps back to back."""
    fn = getattr(self, phase)
    self.sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
      fn()
    self.sync()
    return ((time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps)

  def close(self) -> None:
    pass


def _torch_worker(conn, config, params, batch: dict, options: dict) -> None:
  """A worker process's loop: builds the Torch port's Runner, then answers the parent's
  ("warm_up", phase, calls) / ("time", phase, steps) / ("close",) requests."""
  try:
    runner = torch_runner(config, params, batch, **options)
    conn.send(("ok", runner.info))
    while True:
      request, *args = conn.recv()
      if request == "close":
        return
      conn.send(("ok", getattr(runner, request)(*args)))
  except Exception:  # pylint: disable=broad-except  (reported to the parent, which raises)
    conn.send(("error", traceback.format_exc()))


class ProcessRunner:
  """A Runner living in a worker process (multiprocessing, spawn), driven over a pipe.

  Why: on CPUs the port and rpsm_jax's oneDNN convolutions share one OpenMP runtime in a
  process, and libgomp stops spin-waiting in every team once it manages more threads than
  there are CPUs (synthetic config, 2 cores: the port's train step took 270 ms with
  --notorch_worker, 221-225 ms in its own process). A process of its own gives each
  framework the runtime a user of it would have.
  Timings stay interleaved repeat by repeat; CPU time and peak memory are the worker's.
  """

  def __init__(self, name: str, target: Callable, args: tuple):
    import multiprocessing  # pylint: disable=g-import-not-at-top
    context = multiprocessing.get_context("spawn")
    self.name = name
    self._conn, child = context.Pipe()
    self._process = context.Process(target=target, args=(child,) + args, daemon=True)
    self._process.start()
    child.close()
    try:
      self.info = self._receive()
    except RuntimeError:
      self.close()
      raise

  def _receive(self):
    try:
      status, value = self._conn.recv()
    except EOFError as e:
      self._process.join(timeout=5)
      raise RuntimeError(f"the {self.name} worker process died (exit code "
                         f"{self._process.exitcode})") from e
    if status == "error":
      raise RuntimeError(f"the {self.name} worker process failed:\n{value}")
    return value

  def warm_up(self, phase: str, calls: int) -> dict:
    self._conn.send(("warm_up", phase, calls))
    return self._receive()

  def time(self, phase: str, steps: int) -> tuple[float, float]:
    self._conn.send(("time", phase, steps))
    return self._receive()

  def close(self) -> None:
    if self._process.is_alive():
      try:
        self._conn.send(("close",))
      except OSError:   # the worker closed its end already
        pass
    self._process.join(timeout=30)
    if self._process.is_alive():
      self._process.kill()
      self._process.join()


def random_params(model, config, seed: int = 0):
  """He-scaled random weights (zero biases) drawn on the host, for timing only.

  Avoids compiling `model.init` (15-30 s on a 2-core CPU for the synthetic config).
  """
  variables, _ = summary.abstract_variables(model, config)
  rng = np.random.default_rng(seed)

  def draw(s):
    if len(s.shape) < 2:
      return np.zeros(s.shape, np.float32)
    return rng.normal(0.0, np.sqrt(2.0 / np.prod(s.shape[:-1])), s.shape).astype(np.float32)
  return jax.tree.map(draw, variables["params"])


def synthetic_batch(config, batch: int, seed: int = 0) -> dict:
  """Random inputs shaped like the pipeline's: image uint8 (B, T, S, S, 3); pose_3d
  float32 (B, T, P, 3) normalised coordinates; mask bool (B, T)."""
  rng = np.random.default_rng(seed)
  t, s, p = config.clip_length, config.model.input_size, config.model.num_joints
  return {"image": rng.integers(0, 256, (batch, t, s, s, 3), dtype=np.uint8),
          "pose_3d": rng.normal(size=(batch, t, p, 3)).astype(np.float32),
          "mask": np.ones((batch, t), bool)}


def _flops(lowered) -> float:
  """FLOPs of a lowered computation from XLA's cost analysis of its unoptimised HLO.

  Backend-independent: after optimisation the GPU compiler turns convolutions into library
  calls it no longer counts. On CPUs it equals the compiled count within 0.01%.
  """
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def forward_flops_per_frame(model, config, batch: int = 1) -> float:
  """Forward model FLOPs per frame (summary.forward_flops_per_frame: direct convolutions),
  on any backend."""
  variables, frames = summary.abstract_variables(model, config, batch)
  lowered = jax.jit(model.clone(conv=None).apply).lower(variables, frames)
  return _flops(lowered) / (batch * config.clip_length)


def _xla_peak_mb(compiled) -> Optional[float]:
  """Peak of XLA's buffer assignment for one call: arguments (parameters, optimiser state,
  batch), outputs and temporaries, donated buffers counted once."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  # (peak_memory_in_bytes is not filled in by XLA:CPU in jaxlib 0.10.)
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes) / 2 ** 20


def _frames(image):
  """uint8 frames -> the model's input (poses.model_input, in the step)."""
  return image.astype(jnp.float32) / 255.0 - 0.5


def jax_runner(config, params, batch: dict) -> Runner:
  """The JAX train step exactly as training compiles it, and the jitted forward pass."""
  model = model_factory.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
  mesh = parallel.create_mesh()
  state = jax.device_put(train.TrainState.create(apply_fn=model.apply, params=params, tx=tx),
                         parallel.replicated(mesh))
  device_batch = parallel.global_batch(train.with_stop_flag(batch), mesh)
  info = {"convolutions": (f"{config.model.get('conv_algorithm', 'auto')}: "
                           f"{convolution.describe(model.conv)}")}

  start = time.perf_counter()
  lowered = train.compile_train_step(config, mesh).lower(state, device_batch)
  step = lowered.compile()
  info["train_compile_s"] = time.perf_counter() - start
  frames = batch["image"].shape[0] * batch["image"].shape[1]
  # Counted with lax convolutions: XLA does not count custom calls (oneDNN).
  direct = state.replace(apply_fn=model.clone(conv=None).apply)
  info["train_gflops_per_frame_xla"] = _flops(
      train.compile_train_step(config, mesh).lower(direct, device_batch)) / frames / 1e9
  info["train_xla_peak_mb"] = _xla_peak_mb(step)

  def forward(params, image):
    return model.apply({"params": params}, _frames(image))

  options = xla_cpu.compiler_options("infer")
  info["infer_compiler_options"] = options
  start = time.perf_counter()
  forward = jax.jit(forward, compiler_options=options).lower(
      state.params, device_batch["image"]).compile()
  info["infer_compile_s"] = time.perf_counter() - start
  info["infer_xla_peak_mb"] = _xla_peak_mb(forward)

  holder = {"state": state, "out": None}

  def train_once():
    holder["state"], holder["out"] = step(holder["state"], device_batch)

  def infer_once():
    holder["out"] = forward(holder["state"].params, device_batch["image"])

  def sync():
    jax.block_until_ready((holder["state"], holder["out"]))

  return Runner("jax", train_once, infer_once, sync, info)


def torch_runner(config, params, batch: dict, *, compile_model: bool = False,
                 channels_last: bool = False, num_threads: Optional[int] = None) -> Runner:
  """The Torch port with the same weights, loss and optimiser as the JAX step."""
  import torch  # pylint: disable=g-import-not-at-top
  from rpsm_jax.tools import torch_port  # pylint: disable=g-import-not-at-top

  if num_threads:
    torch.set_num_threads(num_threads)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  model = torch_port.TorchRPSM.from_config(config.model, channels_last=channels_last)
  torch_port.flax_to_torch(params, model)
  model.to(device)
  trainable = [p for p in model.parameters() if p.requires_grad]
  opt = config.optimizer   # a constant rate: the schedule's value does not change the cost
  if opt.name == "adam_l2":   # weight decay added to the gradient (coupled), as optax's
    optimizer = torch.optim.Adam(trainable, lr=opt.learning_rate, weight_decay=opt.weight_decay)
  elif opt.name == "adamw":
    optimizer = torch.optim.AdamW(trainable, lr=opt.learning_rate,
                                  weight_decay=opt.weight_decay)
  else:
    optimizer = torch.optim.Adam(trainable, lr=opt.learning_rate)
  weights = torch.tensor(np.asarray(train.stage_weights(config)), device=device)
  image = torch.from_numpy(batch["image"]).to(device)
  targets = torch.from_numpy(batch["pose_3d"]).to(device)
  mask = torch.from_numpy(batch["mask"]).to(device).float()
  net = torch.compile(model) if compile_model else model

  def frames():
    return image.float() / 255.0 - 0.5

  def train_once():
    optimizer.zero_grad(set_to_none=True)
    poses = net(frames())
    sq = ((poses - targets[None]) ** 2).sum(dim=(-2, -1)) * mask[None]   # train.pose_loss
    loss = (weights * sq.sum(dim=-1).mean(dim=-1)).sum()
    loss.backward()
    if opt.grad_clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(trainable, opt.grad_clip_norm)
    optimizer.step()

  def infer_once():
    with torch.inference_mode():
      net(frames())

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  info = {"device": str(device), "torch_compile": compile_model,
          "channels_last": channels_last, "num_threads": torch.get_num_threads(),
          "num_interop_threads": torch.get_num_interop_threads()}
  return Runner("torch", train_once, infer_once, sync, info)


# --------------------------------------------------------------------------- phases


def _device_peak(name: str) -> Optional[int]:
  """The framework's own peak device-memory counter (GPUs); None on CPUs."""
  if name == "jax":
    if jax.default_backend() == "cpu":
      return None
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    return int(torch.cuda.max_memory_allocated())
  return None


def _reset_device_peak(name: str) -> None:
  if name == "torch":
    import torch  # pylint: disable=g-import-not-at-top
    if torch.cuda.is_available():
      torch.cuda.reset_peak_memory_stats()


def _warm_up(runner: Runner, phase: str, calls: int) -> dict:
  """First call (compilation for lazily compiled code) and warm-up; peak memory."""
  fn = getattr(runner, phase)
  _reset_device_peak(runner.name)
  with _HostPeak() as host:
    start = time.perf_counter()
    fn()
    runner.sync()
    first = time.perf_counter() - start
    for _ in range(calls):
      fn()
      runner.sync()
  device = _device_peak(runner.name)
  out = {"first_call_s": first, "host_peak_rss_delta_mb": host.bytes / 2 ** 20}
  if device is not None:
    # jax's counter cannot be reset: it also holds compile-time autotuning scratch.
    key = "device_peak_cumulative_mb" if runner.name == "jax" else "device_peak_mb"
    out[key] = device / 2 ** 20
  return out


def _time_interleaved(runners: Sequence[Runner], phase: str, steps: int,
                      repeats: int) -> tuple[dict, dict]:
  """Wall and process CPU seconds per step of each runner, alternating within every repeat.

  CPU seconds (all threads of the runner's process, spinning included) measure the work a
  step costs independently of how much of the machine other processes take.
  """
  wall = {r.name: [] for r in runners}
  cpu = {r.name: [] for r in runners}
  for _ in range(repeats):
    for r in runners:
      time.sleep(_SETTLE_S)
      w, c = r.time(phase, steps)
      wall[r.name].append(w)
      cpu[r.name].append(c)
  return wall, cpu


def _pipeline_throughput(config, workers: Sequence[int], steps: int) -> dict:
  """Training batches/s of input_pipeline on 1 and N worker threads (frames/s).

  Uses config.dataset when it is prepared; otherwise builds synthetic_clips/tiny into a
  temporary data_dir (seconds) and reads that at the config's input size and batch.
  """
  from rpsm_jax.pipeline import datasets  # pylint: disable=g-import-not-at-top
  from rpsm_jax.pipeline import input_pipeline  # pylint: disable=g-import-not-at-top

  config = config.copy_and_resolve_references()
  out = {}
  with contextlib.ExitStack() as stack:
    if not datasets.get_builder(config.dataset).is_prepared():
      config.dataset.name, config.dataset.builder_config = "synthetic_clips", "tiny"
      config.dataset.data_dir = stack.enter_context(tempfile.TemporaryDirectory())
      config.dataset.build_if_missing = True
      config.model.num_joints = 17
      start = time.perf_counter()
      datasets.prepare(config.dataset)
      out["built_s"] = time.perf_counter() - start
    out["dataset"] = f"{config.dataset.name}/{config.dataset.builder_config or 'default'}"
    workdir = stack.enter_context(tempfile.TemporaryDirectory())
    frames = config.batch_size * config.clip_length
    for n in workers:
      config.dataset.num_workers = n
      loader = input_pipeline.create_pipeline(config, workdir).train
      loader.batch(0)  # first batch opens the files
      start = time.perf_counter()
      for step in range(1, steps + 1):
        loader.batch(step)
      out[f"frames_per_s_{n}_workers"] = frames * steps / (time.perf_counter() - start)
      loader._pool.shutdown()  # pylint: disable=protected-access
  return out


def _versions() -> dict:
  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "torch", "numpy"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def environment() -> dict:
  device = jax.devices()[0]
  affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
  return {
      "backend": jax.default_backend(),
      "device": getattr(device, "device_kind", str(device)),
      "num_devices": jax.device_count(),
      "cpu": _cpu_model(),
      "cpu_count": os.cpu_count(),
      "cpus_usable": affinity,
      "xla_cpu_threads": affinity,   # XLA:CPU sizes its thread pool to the usable CPUs
      "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
      "versions": _versions(),
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
      "cpu_conv_flag_in_effect": xla_cpu.configure(),
      "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
      "MALLOC_CONF": os.environ.get("MALLOC_CONF", ""),
      "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
      "jemalloc": xla_cpu.jemalloc_loaded(),
  }


def run_benchmark(config, frameworks: Sequence[str] = FRAMEWORKS, batch: int = 0,
                  repeats: int = 5, steps: int = 2, warmup: int = 1,
                  torch_compile: bool = False, channels_last: bool = False,
                  pipeline: bool = False, pipeline_workers: int = 0,
                  pipeline_steps: int = 4, streaming: bool = False,
                  streaming_frames: int = 50, matmul_size: int = 0,
                  torch_threads: int = 0, isolate_torch: Optional[bool] = None,
                  log: Callable[[str], Any] = print) -> dict:
  """Measures every framework on `config` and returns the results (see module docstring).

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
  env = environment()
  log(f"benchmark: {env['device']} ({env['backend']}), batch {batch} clips x "
      f"{config.clip_length} frames at {config.model.input_size} px")
  model = model_factory.create_model(config.model)
  fwd_flops = forward_flops_per_frame(model, config, batch)
  params = random_params(model, config)
  data = synthetic_batch(config, batch)
  threads = (torch_threads or env["xla_cpu_threads"]) if env["backend"] == "cpu" else None

  matmul = matmul_runner(matmul_size or None)
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
        runner = jax_runner(config, params, data)
      else:
        options = dict(compile_model=torch_compile, channels_last=channels_last,
                       num_threads=threads)
        if isolate_torch:
          runner = ProcessRunner("torch", _torch_worker,
                                 (config, jax.device_get(params), data, options))
        else:
          runner = torch_runner(config, params, data, **options)
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
      times[phase], cpu_times[phase] = _time_interleaved(runners + [matmul], phase, steps,
                                                         repeats)
      matmul_times += times[phase]["matmul"]
  rates = [matmul.info["gflop"] / t for t in matmul_times]
  roofline = float(np.median(rates))
  results["matmul_gflops_per_s"] = roofline
  results["matmul"] = {"size": matmul.info["size"], "spread": _stats(rates)}
  log(f"matmul roofline: {roofline:.1f} GFLOP/s ({matmul.info['size']}^3 fp32)")
  for phase in ("train", "infer"):
    for r in runners:
      fps = [frames_per_step / t for t in times[phase][r.name]]
      flops = fwd_flops * (TRAIN_FLOPS_PER_FORWARD if phase == "train" else 1.0)
      med = float(np.median(fps))
      r.info[f"{phase}_frames_per_s"] = med
      r.info[f"{phase}_frames_per_s_spread"] = _stats(fps)
      r.info[f"{phase}_ms_per_step"] = _stats([t * 1e3 for t in times[phase][r.name]])
      r.info[f"{phase}_cpu_s_per_step"] = _stats(cpu_times[phase][r.name])
      r.info[f"{phase}_gflops_per_s"] = med * flops / 1e9
      r.info[f"{phase}_fraction_of_matmul"] = med * flops / 1e9 / roofline
    log(f"timed {phase}: " + ", ".join(
        f"{r.name} {r.info[f'{phase}_frames_per_s']:.1f} frames/s" for r in runners))
  for r in runners:
    results[r.name] = r.info

  if pipeline:
    workers = sorted({1, pipeline_workers or env["cpus_usable"] or 1})
    results["pipeline"] = _pipeline_throughput(config, workers, pipeline_steps)
  if streaming:
    results["streaming"] = _streaming(config, streaming_frames)
  return results


def _streaming(config, num_frames: int) -> dict:
  try:
    from rpsm_jax.apps import streaming  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return {"error": f"rpsm_jax.apps.streaming unavailable: {e}"}
  return streaming.streaming_benchmark(config, num_frames)


# --------------------------------------------------------------------------- report


def _fmt(value, spec=".1f") -> str:
  return "-" if value is None else format(value, spec)


def _rate(value) -> str:
  """Frames/s with at least three significant digits (the paper config on a CPU: 0.2)."""
  return "-" if value is None else format(value, ".1f" if value >= 100 else ".3g")


def format_table(results: dict) -> str:
  """A side-by-side table of the frameworks measured (and ratios jax / torch)."""
  names = [n for n in FRAMEWORKS if n in results]
  c, env = results["config"], results["environment"]
  lines = [
      f"device: {env['device']} ({env['backend']}, {env['cpus_usable']} usable CPUs, "
      f"load {_fmt(env['load_average'][0] if env['load_average'] else None, '.2f')})",
      f"batch: {c['batch_clips']} clips x {c['clip_length']} frames = "
      f"{c['frames_per_step']} frames/step at {c['input_size']} px, width {c['width']}",
      f"forward {results['forward_gflops_per_frame']:.3f} GFLOP/frame (XLA); train "
      f"{results['train_gflops_per_frame']:.3f} (3x forward); matmul roofline "
      f"{results['matmul_gflops_per_s']:.1f} GFLOP/s",
      f"median over {results['repeats']} timings of {results['steps_per_timing']} steps; "
      "[min, max]",
      "",
  ]

  def spread(info, key):
    s = info.get(key + "_spread")
    return f"[{_rate(s['min'])}, {_rate(s['max'])}]" if s else "-"

  on_gpu = env["backend"] != "cpu"

  def mem(info, phase):
    if on_gpu:
      v = info.get(f"{phase}_device_peak_mb", info.get(f"{phase}_xla_peak_mb"))
    else:
      v = info.get(f"{phase}_host_peak_rss_delta_mb")
    return _fmt(v, ".0f")

  def speed_rows(p):   # p: "train" or "infer"
    return [
        (f"{p} frames/s", lambda i: _rate(i.get(f"{p}_frames_per_s"))),
        ("  [min, max]", lambda i: spread(i, f"{p}_frames_per_s")),
        (f"{p} ms/step", lambda i: _fmt(i[f"{p}_ms_per_step"]["median"])),
        (f"{p} CPU s/step",
         lambda i: _fmt(i.get(f"{p}_cpu_s_per_step", {}).get("median"), ".2f")),
        (f"{p} GFLOP/s", lambda i: _fmt(i.get(f"{p}_gflops_per_s"))),
        (f"{p} % of matmul", lambda i: _fmt(100 * i[f"{p}_fraction_of_matmul"], ".0f")),
    ]

  rows = speed_rows("train") + speed_rows("infer") + [
      ("train compile s", lambda i: _fmt(i.get("train_compile_s", 0.0)
                                         + i["train_first_call_s"], ".2f")),
      ("infer compile s", lambda i: _fmt(i.get("infer_compile_s", 0.0)
                                         + i["infer_first_call_s"], ".2f")),
      ("train peak mem MB", lambda i: mem(i, "train")),
      ("infer peak mem MB", lambda i: mem(i, "infer")),
      ("train XLA buffers MB", lambda i: _fmt(i.get("train_xla_peak_mb"), ".0f")),
  ]
  ratio_keys = {"train frames/s": "train_frames_per_s", "infer frames/s": "infer_frames_per_s"}
  header = f"{'':<20}" + "".join(f"{n:>18}" for n in names)
  if len(names) == 2:
    header += f"{'jax/torch':>12}"
  lines.append(header)
  for label, get in rows:
    line = f"{label:<20}" + "".join(f"{get(results[n]):>18}" for n in names)
    if len(names) == 2 and label in ratio_keys:
      k = ratio_keys[label]
      line += f"{results['jax'][k] / results['torch'][k]:>11.2f}x"
    lines.append(line)
  mem_kind = ("GPU peak: jax = XLA's buffer assignment, torch = max_memory_allocated"
              if on_gpu else "rise of the process's RSS over the warm-up calls")
  if "jax" in results and "convolutions" in results["jax"]:
    lines.append(f"(jax convolutions: {results['jax']['convolutions']})")
  lines.append("(CPU s/step: process CPU time, all threads, spinning included)")
  lines.append(f"(peak mem: {mem_kind}; XLA buffers: parameters, optimiser state, batch, "
               "activations and temporaries of one train step; compile: compilation + "
               "first call)")
  if "pipeline" in results:
    p = results["pipeline"]
    rates = ", ".join(f"{k.split('_')[3]} workers {v:.0f}" for k, v in p.items()
                      if k.startswith("frames_per_s_"))
    lines.append(f"input pipeline ({p['dataset']}), frames/s: {rates}")
  if "streaming" in results:
    s = results["streaming"]
    lines.append("streaming: " + (s["error"] if "error" in s else
                                  f"{s['frames_per_s']:.1f} frames/s, median latency "
                                  f"{s['latency_ms_median']:.1f} ms"))
  return "\n".join(lines)


# --------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program (importing must not clash with other CLIs)."""
  config_flags.DEFINE_config_file(
      "config", None, "Model configuration (a configs/*.py file).", lock_config=True)
  flags.DEFINE_list("frameworks", list(FRAMEWORKS), "Frameworks to measure.")
  flags.DEFINE_integer("batch", 0, "Clips per step (0: config.batch_size).")
  flags.DEFINE_integer("repeats", 5, "Timings per framework and phase.")
  flags.DEFINE_integer("steps", 2, "Steps per timing.")
  flags.DEFINE_integer("warmup", 1, "Untimed calls after the first.")
  flags.DEFINE_string("json", None, "Write the results to this JSON file.")
  flags.DEFINE_bool("torch_compile", False, "torch.compile the port.")
  flags.DEFINE_bool("channels_last", False, "Run the port in channels_last memory format.")
  flags.DEFINE_bool("pipeline", False, "Also measure the input pipeline.")
  flags.DEFINE_integer("pipeline_workers", 0, "Threads of the pipeline's second "
                       "measurement (0: usable CPUs).")
  flags.DEFINE_bool("streaming", False, "Also run the streaming benchmark.")
  flags.DEFINE_integer("torch_threads", 0, "Torch's CPU threads (0: as many as XLA uses).")
  flags.DEFINE_integer("matmul_size", 0, "Roofline matmul side (0: 2048 CPU, 8192 GPU).")
  flags.DEFINE_enum("allocator", "auto", xla_cpu.ALLOCATORS, xla_cpu.ALLOCATOR_HELP)
  flags.DEFINE_bool("torch_worker", True, "On CPUs, run the Torch port in a worker process "
                    "(its own OpenMP runtime and allocator state); --notorch_worker: in "
                    "this process.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/synthetic.py")
  try:
    xla_cpu.use_allocator(FLAGS.allocator)
  except RuntimeError as e:
    raise app.UsageError(str(e)) from e
  results = run_benchmark(
      FLAGS.config, FLAGS.frameworks, FLAGS.batch, FLAGS.repeats, FLAGS.steps,
      FLAGS.warmup, FLAGS.torch_compile, FLAGS.channels_last, FLAGS.pipeline,
      FLAGS.pipeline_workers, streaming=FLAGS.streaming, matmul_size=FLAGS.matmul_size,
      torch_threads=FLAGS.torch_threads, isolate_torch=None if FLAGS.torch_worker else False,
      log=lambda m: print(m, file=sys.stderr, flush=True))
  print(format_table(results))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(results, f, indent=2)


def run():
  """The command line: `python -m rpsm_jax.benchmark`."""
  xla_cpu.configure()   # before JAX creates its CPU client
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
