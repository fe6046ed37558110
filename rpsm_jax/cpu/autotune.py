"""conv_algorithm="auto" on CPUs: each layer's convolution chosen by timing it on this CPU.

Why: which of oneDNN's direct convolution, the project's Winograd F(m, 3) and XLA's own
kernels is fastest for a layer depends on the CPU, not only on the layer. On an AVX-512
EPYC Winograd beat oneDNN on >= 128-channel 3x3 layers of >= 32 px; on an AVX2-only EPYC
oneDNN 3.2 runs other kernels (brgconv:avx2, refuses its own Winograd) and XLA's rank
differs too. A table from one machine picks wrong on another, so each distinct layer is
timed once per CPU and the choice is cached.

What is timed: a layer as the model runs it (convolution + bias, + ReLU when the layer has
one) and both its gradients, i.e. its share of a train step, jitted alone with the train
step's XLA:CPU options on random inputs of the layer's shape. Candidates are interleaved
call by call and each keeps its best time (other load on a shared machine only adds time).
Choices are stored in cache_dir()/conv_choices_<cpu>.json (one file per CPU model, ISA,
core count, jaxlib and oneDNN version), read by later runs and processes, rewritten
atomically; a choice timed while other processes kept the cores busy (MAX_OTHER_CORES)
serves its run only. Delete the file to measure again; RPSM_JAX_CONV_CHOICES names
another file.

Cost: a few compilations and calls per new layer shape, once per machine (synthetic
config: a few seconds a shape on 2 cores; at 368 px a shape can take tens of seconds).
"""

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
import threading
import time
from typing import Callable, Dict, Optional, Sequence

import jax
from jax import lax
import numpy as np

from rpsm_jax.cpu import onednn
from rpsm_jax.cpu import winograd
from rpsm_jax.cpu import xla_cpu

CANDIDATES = ("onednn", "winograd", "xla")
NHWC = ("NHWC", "HWIO", "NHWC")
# Calls per candidate: at most MAX_REPEATS, fewer for slow layers so that a candidate's
# timing stays near TIME_BUDGET_S; never fewer than MIN_REPEATS.
MIN_REPEATS, MAX_REPEATS, TIME_BUDGET_S = 2, 5, 1.0
# Winograd is not timed on narrower layers: its memory-bound transforms lost there on both
# CPUs measured (AVX2 EPYC, 40x80x80x16 3x3: 774 ms vs oneDNN 295, XLA 396; 40x40x40x32:
# 449 vs 186, 227), and compiling it took up to 30 s on a loaded 2-core machine.
WINOGRAD_MIN_CHANNELS = 64
# What a oneDNN call costs inside a train step beyond its time alone (each call hands over
# to oneDNN's own thread and wakes its OpenMP team), charged 3 times (forward and both
# gradients) against a timed layer. Estimated on a 2-core AVX-512 EPYC (2026-12-07): with
# oneDNN on configs/synthetic.py's nine small stage layers (18-147 MFLOP, 27 calls a
# step), where alone it won by 0.4 ms a layer, phase 2 ran 27-33 steps/s against 46-47
# with XLA's: about 0.5 ms a call. Winning a layer by more keeps oneDNN (80x80 layers win
# by 7-25 ms).
ONEDNN_CALL_COST_S = 0.5e-3
# Timings taken while other processes kept more than this many cores busy (averaged over
# the layer's timing) serve the run that took them but are not cached: on a 2-core AMD
# EPYC (AVX-512), choices timed beside other work (load average 2.4-2.8) had put phase 1's
# 80x80 layers on XLA (oneDNN timed 35-58 ms against 5-10 ms on the idle machine), and
# every later run's phase-1 step took 94 ms against 70 with oneDNN on every layer.
MAX_OTHER_CORES = 0.25
OTHER_CORES_MIN_WALL_S = 0.25   # shorter timings are followed by a look this long
# Multi-process runs do not time layers (Chooser.choose): oneDNN where it takes the layer,
# the fastest on the larger layers of both CPUs measured.
MULTI_PROCESS_CHOICE = "onednn"
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description() -> Dict[str, str]:
  """{'model': 'AMD EPYC', 'isa': 'avx2 fma', 'cores': '2'}: what the choices depend on."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
  except OSError:
    pass
  isa = " ".join(f for f in _ISA_FLAGS if f in flags) or platform.machine()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"model": model, "isa": isa, "cores": str(cores)}


def _library_versions() -> str:
  ok, _ = onednn.available()
  dnnl = onednn.version() if ok else "no oneDNN"
  return f"jaxlib {importlib.metadata.version('jaxlib')}, oneDNN {dnnl}"


def default_cache_path() -> str:
  if os.environ.get("RPSM_JAX_CONV_CHOICES"):
    return os.environ["RPSM_JAX_CONV_CHOICES"]
  cpu = cpu_description()
  key = json.dumps([cpu, _library_versions()], sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:12]
  return os.path.join(onednn.cache_dir(), f"conv_choices_{digest}.json")


def layer_key(x_shape, w_shape, strides, padding, relu: bool) -> str:
  """'40x80x80x16*3x3x16x16/1x1 p1,1,1,1 relu': one layer's identity in the cache."""
  pads = ",".join(str(p) for pair in padding for p in pair)
  return ("x".join(map(str, x_shape)) + "*" + "x".join(map(str, w_shape))
          + "/" + "x".join(map(str, strides)) + f" p{pads}" + (" relu" if relu else ""))


def _layer_fn(candidate: str, strides, padding, relu: bool, tile: int) -> Callable:
  """(x, w, b) -> the layer's output with `candidate`'s convolution."""
  def layer(x, w, b):
    if candidate == "onednn" and relu:
      return onednn.conv_bias_relu(x, w, b, strides, padding)
    if candidate == "onednn":
      y = onednn.conv(x, w, strides, padding)
    elif candidate == "winograd":
      y = winograd.conv3x3(x, w, tile or winograd.choose_tile(x.shape))
    else:
      y = lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)
    y = y + b
    return jax.nn.relu(y) if relu else y
  return layer


def time_layer(candidates: Sequence[str], x_shape, w_shape, strides, padding, relu: bool,
               tile: int = 0) -> Dict[str, float]:
  """{candidate: best seconds of one forward + both gradients} on random float32 inputs.

  x_shape (N, H, W, C), w_shape (KH, KW, C, O); strides (2,), padding ((t, b), (l, r)).
  Safe to call while an outer function is being traced: runs concrete computations only.
  """
  rng = np.random.default_rng(0)
  x = rng.standard_normal(x_shape, np.float32)
  w = rng.standard_normal(w_shape, np.float32) * np.float32(1 / np.sqrt(np.prod(w_shape[:3])))
  b = rng.standard_normal(w_shape[-1:], np.float32)
  with jax.ensure_compile_time_eval():
    runs = {}
    for name in candidates:
      layer = _layer_fn(name, strides, padding, relu, tile)

      def step(x, w, b, dy, layer=layer):
        _, vjp = jax.vjp(layer, x, w, b)
        return vjp(dy)

      out = jax.eval_shape(layer, x, w, b)
      dy = rng.standard_normal(out.shape, np.float32)
      compiled = jax.jit(step, compiler_options=xla_cpu.compiler_options("train")).lower(
          x, w, b, dy).compile()
      args = [jax.device_put(a) for a in (x, w, b, dy)]
      start = time.perf_counter()
      jax.block_until_ready(compiled(*args))   # warm-up: oneDNN builds its primitives
      runs[name] = (compiled, args, time.perf_counter() - start)
    slowest = max(t for _, _, t in runs.values())
    repeats = int(np.clip(TIME_BUDGET_S / max(slowest, 1e-6), MIN_REPEATS, MAX_REPEATS))
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):   # interleaved, so a burst of other load hits all alike
      for name, (compiled, args, _) in runs.items():
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best[name] = min(best[name], time.perf_counter() - start)
  return best


def cpu_seconds() -> Optional[tuple]:
  """(seconds the machine's CPUs were busy, seconds this process ran on them) so far, from
  /proc/stat (steal time counts as busy: another guest had the core) and os.times();
  None where /proc/stat is missing."""
  try:
    with open("/proc/stat") as f:
      ticks = [int(v) for v in f.readline().split()[1:9]]
    per_second = os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, AttributeError):
    return None
  busy = sum(ticks) - ticks[3] - ticks[4]   # all but idle and iowait
  own = os.times()
  return busy / per_second, own.user + own.system


def other_cores(before: Optional[tuple], after: Optional[tuple], wall_s: float
                ) -> Optional[float]:
  """Cores that other processes kept busy on average between two cpu_seconds() readings
  `wall_s` seconds apart (None when unknown, or over too short a time for the clock
  ticks' 10 ms to say)."""
  if before is None or after is None or wall_s < OTHER_CORES_MIN_WALL_S:
    return None
  return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall_s)


class _RunRecord:
  """The choices a run made (layers and whole steps), kept in its workdir while `pinned`.

  A restarted run reads them back and runs the same convolutions, so a resumed run still
  ends bitwise equal to an uninterrupted one even where a choice was not cached for the
  machine (timed beside other work) or the machine's cache changed meanwhile.
  """

  def __init__(self):
    self.path = None
    self.choices = {"layers": {}, "steps": {}}

  def get(self, kind: str, key: str) -> Optional[str]:
    return self.choices[kind].get(key)

  def put(self, kind: str, key: str, choice: str) -> None:
    if self.path is None or self.choices[kind].get(key) == choice:
      return
    self.choices[kind][key] = choice
    try:
      write_json(self.path, self.choices)
    except OSError as e:
      logging.warning("conv_algorithm auto: could not record the run's choices in %s: %s",
                      self.path, e)


RUN = _RunRecord()


@contextlib.contextmanager
def pinned(path: Optional[str]):
  """Within the block, choices come first from the run record at `path` (a JSON file in
  the run's workdir; None: no record) and every choice made is added to it."""
  saved = RUN.path, RUN.choices
  RUN.path, RUN.choices = path, {"layers": {}, "steps": {}}
  if path and os.path.exists(path):
    try:
      with open(path) as f:
        recorded = json.load(f)
      RUN.choices = {kind: dict(recorded.get(kind, {})) for kind in RUN.choices}
    except (OSError, ValueError) as e:
      logging.warning("conv_algorithm auto: ignoring the run's recorded choices in %s "
                      "(%s); choosing again", path, e)
  try:
    yield
  finally:
    RUN.path, RUN.choices = saved


def write_json(path: str, content: dict) -> None:
  """Writes `content` to `path` atomically (a temporary file renamed into place)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".json", dir=os.path.dirname(path) or ".")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(content, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def others_since(before: Optional[tuple], start: float) -> Optional[float]:
  """other_cores() from a cpu_seconds() reading `before` taken at time.monotonic() `start`
  until now; after too short a time to tell, from a look OTHER_CORES_MIN_WALL_S long."""
  others = other_cores(before, cpu_seconds(), time.monotonic() - start)
  if others is None and before is not None:
    before, start = cpu_seconds(), time.monotonic()
    time.sleep(OTHER_CORES_MIN_WALL_S)
    others = other_cores(before, cpu_seconds(), time.monotonic() - start)
  return others


def charge(candidate: str) -> float:
  """Seconds added to a candidate's time alone (forward + both gradients) when choosing."""
  return 3 * ONEDNN_CALL_COST_S if candidate == "onednn" else 0.0


class Chooser:
  """The per-layer choice of "auto": measured once per layer and CPU, cached on disk.

  with_onednn: whether oneDNN is a candidate (it is built and loads here).
  """

  def __init__(self, with_onednn: bool, tile: int = 0, path: Optional[str] = None):
    self.with_onednn = with_onednn
    self.tile = tile
    self.path = path or default_cache_path()
    self._lock = threading.Lock()
    self._choices = None   # {layer_key: {"choice": name, "ms": {name: ms}}}, read lazily
    self._unsaved = {}     # choices timed beside other work: this process's only

  def candidates(self, x, w, strides, padding) -> list:
    """The implementations that can run this layer (x, w: arrays or ShapeDtypeStructs)."""
    out = []
    if self.with_onednn and onednn.eligible(x, w, strides, padding, None, None, NHWC, 1):
      out.append("onednn")
    if (winograd.eligible(x, w, strides, padding, None, None, NHWC, 1)
        and min(w.shape[2], w.shape[3]) >= WINOGRAD_MIN_CHANNELS):
      out.append("winograd")
    return out + ["xla"]

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f).get("layers", {})
    except (OSError, ValueError):
      return {}

  def _write(self) -> None:
    """Merges with what other processes wrote meanwhile and replaces the file atomically."""
    merged = {**self._read(), **self._choices}
    write_json(self.path, {"cpu": cpu_description(), "libraries": _library_versions(),
                            "layers": merged})

  def choose(self, x, w, strides, padding, relu: bool) -> str:
    """The fastest candidate for an NHWC/HWIO float32 layer with static shapes (the run's
    recorded choice first: `pinned`)."""
    candidates = self.candidates(x, w, strides, padding)
    if len(candidates) == 1:
      return candidates[0]
    if jax.process_count() > 1:
      # Every process must compile the same program (or its collectives never meet), and
      # timings or cache files differ between hosts: a fixed rule instead.
      return MULTI_PROCESS_CHOICE if MULTI_PROCESS_CHOICE in candidates else "xla"
    key = layer_key(x.shape, w.shape, strides, padding, relu)
    recorded = RUN.get("layers", key)
    if recorded in candidates:
      return recorded
    choice = self._choose(key, candidates, x, w, strides, padding, relu)
    RUN.put("layers", key, choice)
    return choice

  def _choose(self, key, candidates, x, w, strides, padding, relu: bool) -> str:
    with self._lock:
      if self._choices is None:
        self._choices = self._read()
      known = self._unsaved.get(key) or self._choices.get(key)
      if known and known.get("choice") in candidates and set(known.get("ms", {})) == set(
          candidates):
        return known["choice"]
      before, start = cpu_seconds(), time.monotonic()
      seconds = time_layer(candidates, x.shape, w.shape, strides, padding, relu, self.tile)
      others = others_since(before, start)
      choice = min(seconds, key=lambda k: seconds[k] + charge(k))
      # The load average and the cores other processes used while timing: on a shared
      # machine they say how far to trust the timings.
      load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
      entry = {"choice": choice, "load": round(load, 2),
               "other_cores": None if others is None else round(others, 2),
               "ms": {k: round(v * 1e3, 3) for k, v in seconds.items()}}
      logging.info("conv_algorithm auto: %s -> %s (forward + gradients, best ms: %s; load "
                   "%.1f, other processes %s cores)", key, choice, ", ".join(
                       f"{k} {v * 1e3:.2f}" + (f" + {charge(k) * 1e3:.1f} per-call cost"
                                               if charge(k) else "")
                       for k, v in seconds.items()), load,
                   "?" if others is None else f"{others:.1f}")
      if others is not None and others > MAX_OTHER_CORES:
        self._unsaved[key] = entry
        logging.warning("conv_algorithm auto: %s was timed while other processes kept %.1f "
                        "cores busy: its choice serves this run only and is timed again "
                        "by the next", key, others)
        return choice
      self._choices[key] = entry
      try:
        self._write()
      except OSError as e:   # a read-only home: choices then last for this process only
        logging.warning("conv_algorithm auto: could not save %s: %s", self.path, e)
      return choice

  def choices(self) -> dict:
    """{layer_key: choice} measured or read so far."""
    with self._lock:
      return {k: v["choice"] for k, v in {**(self._choices or {}), **self._unsaved}.items()}
