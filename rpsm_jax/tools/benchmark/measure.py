"""How the benchmark measures: peak memory (/proc, device counters), step timing, spreads."""

import ctypes
import threading
import time
from typing import Optional, Sequence

import jax
import numpy as np

# Pause before each timing: OpenMP threads (the port's, oneDNN's) spin-wait for a few ms
# after their last parallel region and would take CPU from the next runner's timing.
SETTLE_S = 0.05


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


class HostPeak:
  """Peak rise of the resident set during a `with` block: `.bytes` after it.

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


def stats(values: Sequence[float]) -> dict:
  """median, min, max, q25, q75 of `values` (any unit, kept)."""
  v = np.asarray(values, np.float64)
  return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
          "q25": float(np.percentile(v, 25)), "q75": float(np.percentile(v, 75))}


def xla_peak_mb(compiled) -> Optional[float]:
  """Peak of XLA's buffer assignment for one call, MB: arguments (parameters, optimiser
  state, batch), outputs and temporaries, donated buffers counted once."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  # (peak_memory_in_bytes is not filled in by XLA:CPU in jaxlib 0.10.)
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes) / 2 ** 20


def _device_peak(name: str) -> Optional[int]:
  """The framework's own peak device-memory counter in bytes (GPUs); None on CPUs."""
  if name == "jax":
    if jax.default_backend() == "cpu":
      return None
    stats_ = jax.devices()[0].memory_stats() or {}
    return stats_.get("peak_bytes_in_use")
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    return int(torch.cuda.max_memory_allocated())
  return None


def _reset_device_peak(name: str) -> None:
  if name == "torch":
    import torch  # pylint: disable=g-import-not-at-top
    if torch.cuda.is_available():
      torch.cuda.reset_peak_memory_stats()


def warm_up(runner, phase: str, calls: int) -> dict:
  """First call (compilation for lazily compiled code) and `calls` more; peak memory.

  runner: a runners.Runner (its `phase` callable, `sync` and `name`). Returns
  first_call_s, host_peak_rss_delta_mb and, on GPUs, the device peak in MB.
  """
  fn = getattr(runner, phase)
  _reset_device_peak(runner.name)
  with HostPeak() as host:
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


def time_steps(fn, sync, steps: int) -> tuple[float, float]:
  """Wall and process CPU seconds per call of `fn` over `steps` calls back to back."""
  sync()
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    fn()
  sync()
  return ((time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps)


def time_interleaved(runners: Sequence, phase: str, steps: int,
                     repeats: int) -> tuple[dict, dict]:
  """Wall and process CPU seconds per step of each runner, alternating within every repeat.

  Returns ({name: [s, ...]}, {name: [cpu s, ...]}), `repeats` values each. CPU seconds
  (all threads of the runner's process, spinning included) measure the work a step costs
  independently of how much of the machine other processes take.
  """
  wall = {r.name: [] for r in runners}
  cpu = {r.name: [] for r in runners}
  for _ in range(repeats):
    for r in runners:
      time.sleep(SETTLE_S)
      w, c = r.time(phase, steps)
      wall[r.name].append(w)
      cpu[r.name].append(c)
  return wall, cpu
