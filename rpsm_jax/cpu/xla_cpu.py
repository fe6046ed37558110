"""XLA:CPU options that must be set before the first JAX computation, and CPU allocator help.

jaxlib 0.10's default CPU pipeline hands every convolution to the YNN library, whose
weight-gradient convolution is several times slower than XLA's Eigen path (DESIGN.md: a
64->64 3x3 layer at 128x128 took 1040 ms vs 68-85 ms). Excluding individual convolutions
from YNN fusion makes CPU training faster: the paper config's train step (5 frames at
368 px) took 27 s instead of 45 s. The flag only exists in the jaxlib versions listed here
(an unknown flag aborts XLA), and only affects the CPU backend, so GPU and TPU runs are
unchanged.

`configure()` sets it for the whole process (XLA_FLAGS); `compiler_options(purpose)` gives
the per-function equivalent for `jax.jit(..., compiler_options=...)`, which overrides
XLA_FLAGS for that function alone. Forward-only functions may keep YNN convolutions: on the
RPSM forward pass both sets measured the same within noise (synthetic: 225 vs 232 ms,
paper: 5.08 vs 5.04 s), on a lone 64->64 layer at 128x128 YNN was faster (164 vs 216 ms).

XLA:CPU allocates its buffers per call; glibc maps large ones fresh each time and pays the
page faults again. Preloading jemalloc (`use_allocator()`) made the synthetic train step
about 10% and its forward pass about 20% faster in the benchmark, and training through
rpsm_jax.main (input pipeline included) 32% faster. Where jemalloc is not installed (it is
not on the package index), glibc's own tunables give most of that: transparent huge pages
for the heap and no returning of freed memory (GLIBC_TUNABLES below).
"""

import glob
import importlib.metadata
import os
import sys
from typing import Optional, Sequence

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_JAXLIB_WITH_YNN_FLAG = ("0.10.",)

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# jaxlib 0.10.2's default set (read from an --xla_dump_to debug_options file). A per-function
# value replaces the whole list and takes enum names, comma-separated; XLA_FLAGS' "-name"
# syntax is rejected there.
_YNN_DEFAULT = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
                "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
                "LIBRARY_FUSION_TYPE_REDUCE")
_YNN_SETS = {
    # = the XLA_FLAGS setting of configure(). Dropping REDUCE too was 5% slower.
    "train": tuple(t for t in _YNN_DEFAULT
                   if t != "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"),
    "infer": _YNN_DEFAULT,
}

# jemalloc settings of DESIGN.md: return nothing to the OS, so every call after the first
# reuses mapped pages (faster than jemalloc's defaults here, at ~40% more peak RSS).
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
_JEMALLOC_GLOBS = ("/usr/lib/*/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2",
                   "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2")
# glibc malloc's tunables for "glibc-tuned" (glibc >= 2.35, which added hugetlb). Measured
# on a 2-core AVX-512 EPYC, synthetic benchmark, three alternating runs each (frames/s,
# train / infer): untuned 274-291 / 905-977; hugetlb=1 alone 317-344 / 1010-1035 (heap in
# transparent huge pages, where the kernel's THP mode is "madvise": fewer TLB misses and
# page faults); all three 326-349 / 1083-1102 (the thresholds keep freed memory, as
# JEMALLOC_CONF does); jemalloc 357-370 / 1058-1066. Peak memory within 15 MB of untuned.
GLIBC_TUNABLES = (("glibc.malloc.hugetlb", "1"),
                  ("glibc.malloc.mmap_threshold", str(32 << 20)),   # glibc's maximum
                  ("glibc.malloc.trim_threshold", str(16 << 30)))
_GLIBC_WITH_HUGETLB = (2, 35)


def _jaxlib_knows_flag() -> bool:
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  return version.startswith(_JAXLIB_WITH_YNN_FLAG)


def configure() -> bool:
  """Adds the CPU convolution flag to XLA_FLAGS when this jaxlib knows it.

  Does nothing when RPSM_JAX_KEEP_XLA_FLAGS=1 (for A/B measurements) or when the user
  already set the flag. Returns whether the flag is in effect.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return True
  if os.environ.get("RPSM_JAX_KEEP_XLA_FLAGS") == "1" or not _jaxlib_knows_flag():
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}".strip()
  return True


def compiler_options(purpose: str) -> dict:
  """`jax.jit(..., compiler_options=...)` for a CPU computation used for `purpose`.

  purpose: "train" (forward + backward) or "infer" (forward only). Returns {} unless JAX's
  default backend is the CPU and this jaxlib knows the option, so GPU and TPU compilations
  are unchanged.
  """
  if purpose not in _YNN_SETS:
    raise ValueError(f"purpose must be one of {sorted(_YNN_SETS)}, got {purpose!r}")
  import jax  # pylint: disable=g-import-not-at-top  (this module runs before jax starts)
  if jax.default_backend() != "cpu" or not _jaxlib_knows_flag():
    return {}
  return {YNN_OPTION: ",".join(_YNN_SETS[purpose])}


def jemalloc_path() -> Optional[str]:
  """The system's libjemalloc.so.2 (Debian/Ubuntu: `apt-get install libjemalloc2`)."""
  for pattern in _JEMALLOC_GLOBS:
    found = sorted(glob.glob(pattern))
    if found:
      return found[0]
  return None


def jemalloc_loaded() -> bool:
  """Whether this process's malloc is jemalloc's."""
  import ctypes  # pylint: disable=g-import-not-at-top
  return hasattr(ctypes.CDLL(None), "mallctl")


def release_free_memory() -> str:
  """Returns the allocator's freed but kept pages to the OS (JEMALLOC_CONF and
  GLIBC_TUNABLES keep them for reuse, which a one-off piece of work such as a second
  compiled step never reuses). Returns which allocator was asked ("" if none could be)."""
  import ctypes  # pylint: disable=g-import-not-at-top
  libc = ctypes.CDLL(None)
  if hasattr(libc, "mallctl"):
    all_arenas = 4096   # MALLCTL_ARENAS_ALL
    if libc.mallctl(f"arena.{all_arenas}.purge".encode(), None, None, None, 0) == 0:
      return "jemalloc"
    return ""
  if hasattr(libc, "malloc_trim"):
    libc.malloc_trim(0)
    return "glibc"
  return ""


def jemalloc_env(environ=None) -> Optional[dict]:
  """A copy of `environ` that preloads jemalloc with JEMALLOC_CONF; None if not installed."""
  path = jemalloc_path()
  if path is None:
    return None
  env = dict(os.environ if environ is None else environ)
  env["LD_PRELOAD"] = " ".join(filter(None, [path, env.get("LD_PRELOAD", "")]))
  env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
  return env


def glibc_version() -> Optional[tuple]:
  """(major, minor) of the running glibc; None under another C library."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
  except (AttributeError, ValueError, OSError):
    return None
  if name != "glibc":
    return None
  try:
    return tuple(int(part) for part in version.split(".")[:2])
  except ValueError:
    return None


def _parse_tunables(value: str) -> dict:
  return dict(item.split("=", 1) for item in value.split(":") if "=" in item)


def glibc_tuned_env(environ=None) -> Optional[dict]:
  """A copy of `environ` with GLIBC_TUNABLES added; None without glibc >= 2.35.

  Tunables the user already set keep the user's value.
  """
  version = glibc_version()
  if version is None or version < _GLIBC_WITH_HUGETLB:
    return None
  env = dict(os.environ if environ is None else environ)
  tunables = {**dict(GLIBC_TUNABLES), **_parse_tunables(env.get("GLIBC_TUNABLES", ""))}
  env["GLIBC_TUNABLES"] = ":".join(f"{k}={v}" for k, v in tunables.items())
  return env


def allocator_in_use() -> str:
  """"jemalloc", "glibc-tuned" (this process started with GLIBC_TUNABLES' malloc settings,
  which glibc reads only at start-up) or "system"."""
  if jemalloc_loaded():
    return "jemalloc"
  set_at_start = _parse_tunables(os.environ.get("GLIBC_TUNABLES", ""))
  if glibc_version() is not None and all(k in set_at_start for k, _ in GLIBC_TUNABLES):
    return "glibc-tuned"
  return "system"


ALLOCATORS = ("auto", "jemalloc", "glibc-tuned", "system")
ALLOCATOR_HELP = ("auto: when JAX will run on the CPU, restart with jemalloc preloaded if "
                  "the system has it (apt-get install libjemalloc2), else with glibc-tuned "
                  "where the config says so (config.cpu_glibc_tuned); "
                  "jemalloc: always (error if missing); glibc-tuned: glibc's malloc in "
                  "transparent huge pages, keeping freed memory (GLIBC_TUNABLES; glibc >= "
                  "2.35); system: the process's own malloc as it is.")
# JAX's accelerator plugins: with one installed, "auto" leaves malloc alone (the device
# allocates its own memory; jemalloc's never-return-memory setting only costs host RAM).
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def _cpu_only() -> bool:
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  import importlib.util  # pylint: disable=g-import-not-at-top
  return not any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def use_allocator(choice: str, auto_glibc_tuned: bool = False) -> None:
  """Applies an --allocator flag (ALLOCATORS): may restart the program under another malloc.

  auto_glibc_tuned: whether "auto" without jemalloc restarts under glibc-tuned (the
  config's `cpu_glibc_tuned`: it speeds some models' steps and slows others').

  Call first thing in a `python -m` command line's main(). Training on the synthetic
  config ran at 3.7 vs 2.8 steps/s with jemalloc (rpsm_jax.main, 300 steps, this 2-core
  CPU), at ~40% more peak memory. Returns only when no restart happens; the environment
  variable RPSM_JAX_REEXECED (set on the restart) guards against loops, and set by hand
  it keeps the malloc the process has.
  """
  if choice not in ALLOCATORS:
    raise ValueError(f"--allocator must be one of {ALLOCATORS}, got {choice!r}")
  if choice == "system" or (choice == "auto" and not _cpu_only()):
    return
  in_use = allocator_in_use()
  if in_use == choice or (choice == "auto" and in_use != "system"):
    return
  if choice == "auto":
    env = jemalloc_env() or (glibc_tuned_env() if auto_glibc_tuned else None)
  else:
    env = jemalloc_env() if choice == "jemalloc" else glibc_tuned_env()
  restart_allowed = os.environ.get("RPSM_JAX_REEXECED") != "1"
  if env is not None and restart_allowed:
    _reexec(env)
  if choice == "auto":   # nothing better here: the system's malloc
    return
  if not restart_allowed:
    why = "RPSM_JAX_REEXECED=1 forbids the restart that applies it"
  elif choice == "jemalloc":
    why = "no libjemalloc.so.2 found (apt-get install libjemalloc2)"
  elif in_use == "jemalloc":
    why = f"jemalloc is preloaded (LD_PRELOAD={os.environ.get('LD_PRELOAD', '')})"
  else:
    libc = os.confstr("CS_GNU_LIBC_VERSION") if glibc_version() else "not glibc"
    why = f"needs glibc >= 2.35, this C library is {libc}"
  raise RuntimeError(f"--allocator={choice}: {why}")


def _reexec(env: dict, argv: Optional[Sequence[str]] = None) -> None:
  """Restarts this `python -m` program with environment `env`; does not return."""
  env = dict(env, RPSM_JAX_REEXECED="1")
  argv = list(sys.argv if argv is None else argv)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, "-m", _main_module()] + argv[1:], env)


def _main_module() -> str:
  """The `python -m` name of the running program (its __main__ module's spec)."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  if spec is None or not spec.name:
    raise RuntimeError("the allocator restart needs a program started with `python -m`")
  name = spec.name
  return name[:-len(".__main__")] if name.endswith(".__main__") else name
