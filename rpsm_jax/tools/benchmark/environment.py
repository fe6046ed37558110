"""The machine a benchmark ran on: device, CPUs, load, versions, XLA and allocator settings."""

import importlib.metadata
import os
import platform

import jax

from rpsm_jax.cpu import xla_cpu


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
  """What the results' "environment" holds (JSON-serialisable)."""
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
      "malloc": xla_cpu.allocator_in_use(),
  }
