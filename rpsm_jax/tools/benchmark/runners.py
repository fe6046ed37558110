"""What the benchmark times: each framework's train step and forward pass on a fixed batch.

A Runner dispatches one step per `train()` / `infer()` call and waits in `sync()`.
`jax_runner` is the train step training compiles; `torch_runner` the Torch port with the
same weights, loss (torch_port.pose_loss) and optimiser; `ProcessRunner` drives a runner
living in a worker process; `matmul_runner` is the roofline.
"""

import dataclasses
import time
import traceback
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rpsm_jax import model_factory
from rpsm_jax import parallel
from rpsm_jax import poses
from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import step_check
from rpsm_jax.cpu import xla_cpu
from rpsm_jax.tools import summary
from rpsm_jax.tools.benchmark import measure
from rpsm_jax.training import optim
from rpsm_jax.training import train

FRAMEWORKS = ("jax", "torch")


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
    return measure.warm_up(self, phase, calls)

  def time(self, phase: str, steps: int) -> tuple[float, float]:
    """Wall and process CPU seconds per step over `steps` steps back to back."""
    return measure.time_steps(getattr(self, phase), self.sync, steps)

  def close(self) -> None:
    pass


def matmul_runner(size: Optional[int] = None) -> Runner:
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


def synthetic_batch(config, batch: int, seed: int = 0) -> dict:
  """Random inputs shaped like the pipeline's: image uint8 (B, T, S, S, 3); pose_3d
  float32 (B, T, P, 3) normalised coordinates; mask bool (B, T)."""
  rng = np.random.default_rng(seed)
  t, s, p = config.clip_length, config.model.input_size, config.model.num_joints
  return {"image": rng.integers(0, 256, (batch, t, s, s, 3), dtype=np.uint8),
          "pose_3d": rng.normal(size=(batch, t, p, 3)).astype(np.float32),
          "mask": np.ones((batch, t), bool)}


def jax_runner(config, params, batch: dict) -> Runner:
  """The JAX train step exactly as training compiles it, and the jitted forward pass."""
  model = model_factory.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
  mesh = parallel.create_mesh()
  state = jax.device_put(train.TrainState.create(apply_fn=model.apply, params=params, tx=tx),
                         parallel.replicated(mesh))
  device_batch = parallel.global_batch(train.with_stop_flag(batch), mesh)
  if step_check.applicable(config.model):
    # As training does: the whole step with the per-layer choices or oneDNN everywhere.
    model, state = step_check.choose_model("benchmark (3D training)", model,
                                           train.compile_train_step(config, mesh), state,
                                           device_batch)
  info = {"convolutions": (f"{config.model.get('conv_algorithm', 'auto')}: "
                           f"{convolution.describe(model.conv)}")}

  start = time.perf_counter()
  lowered = train.compile_train_step(config, mesh).lower(state, device_batch)
  step = lowered.compile()
  info["train_compile_s"] = time.perf_counter() - start
  frames = batch["image"].shape[0] * batch["image"].shape[1]
  # Counted with lax convolutions: XLA does not count custom calls (oneDNN). Unoptimised
  # HLO, as summary.forward_flops_per_frame(optimized=False), so GPUs count them too.
  direct = state.replace(apply_fn=model.clone(conv=None).apply)
  info["train_gflops_per_frame_xla"] = summary.xla_flops(
      train.compile_train_step(config, mesh).lower(direct, device_batch)) / frames / 1e9
  info["train_xla_peak_mb"] = measure.xla_peak_mb(step)

  def forward(params, image):   # uint8 in, converted inside the step as training does
    return model.apply({"params": params}, poses.model_input(image))

  options = xla_cpu.compiler_options("infer")
  info["infer_compiler_options"] = options
  start = time.perf_counter()
  forward = jax.jit(forward, compiler_options=options).lower(
      state.params, device_batch["image"]).compile()
  info["infer_compile_s"] = time.perf_counter() - start
  info["infer_xla_peak_mb"] = measure.xla_peak_mb(forward)

  holder = {"state": state, "out": None}

  def train_once():
    holder["state"], holder["out"] = step(holder["state"], device_batch)

  def infer_once():
    holder["out"] = forward(holder["state"].params, device_batch["image"])

  def sync():
    jax.block_until_ready((holder["state"], holder["out"]))

  return Runner("jax", train_once, infer_once, sync, info)


def _torch_optimizer(torch, opt, trainable):
  """config.optimizer's torch.optim twin, at a constant rate (the schedule's value does
  not change the cost)."""
  if opt.name == "adam_l2":   # weight decay added to the gradient (coupled), as optax's
    return torch.optim.Adam(trainable, lr=opt.learning_rate, weight_decay=opt.weight_decay)
  if opt.name == "adamw":
    return torch.optim.AdamW(trainable, lr=opt.learning_rate, weight_decay=opt.weight_decay)
  return torch.optim.Adam(trainable, lr=opt.learning_rate)


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
  opt = config.optimizer
  optimizer = _torch_optimizer(torch, opt, trainable)
  weights = torch.tensor(np.asarray(train.stage_weights(config)), device=device)
  image = torch.from_numpy(batch["image"]).to(device)
  targets = torch.from_numpy(batch["pose_3d"]).to(device)
  mask = torch.from_numpy(batch["mask"]).to(device).float()
  net = torch.compile(model) if compile_model else model

  def train_once():
    optimizer.zero_grad(set_to_none=True)
    loss, _ = torch_port.pose_loss(net(torch_port.model_input(image)), targets, mask,
                                   weights)
    loss.backward()
    if opt.grad_clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(trainable, opt.grad_clip_norm)
    optimizer.step()

  def infer_once():
    with torch.inference_mode():
      net(torch_port.model_input(image))

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  info = {"device": str(device), "torch_compile": compile_model,
          "channels_last": channels_last, "num_threads": torch.get_num_threads(),
          "num_interop_threads": torch.get_num_interop_threads()}
  return Runner("torch", train_once, infer_once, sync, info)


def torch_worker(conn, config, params, batch: dict, options: dict) -> None:
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
