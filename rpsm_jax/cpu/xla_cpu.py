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
rpsm_jax.main (input pipeline included) 32% faster.
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


def jemalloc_env(environ=None) -> Optional[dict]:
  """A copy of `environ` that preloads jemalloc with JEMALLOC_CONF; None if not installed."""
  path = jemalloc_path()
  if path is None:
    return None
  env = dict(os.environ if environ is None else environ)
  env["LD_PRELOAD"] = " ".join(filter(None, [path, env.get("LD_PRELOAD", "")]))
  env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
  return env


ALLOCATORS = ("auto", "jemalloc", "system")
ALLOCATOR_HELP = ("auto: restart with jemalloc preloaded when the system has it (apt-get "
                  "install libjemalloc2) and JAX will run on the CPU; jemalloc: always "
                  "(error if missing); system: the process's own malloc.")
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


def use_allocator(choice: str) -> None:
  """Applies an --allocator flag (ALLOCATORS): may restart the program with jemalloc.

  Call first thing in a `python -m` command line's main(). Training on the synthetic
  config ran at 3.7 vs 2.8 steps/s with jemalloc (rpsm_jax.main, 300 steps, this 2-core
  CPU), at ~40% more peak memory.
  """
  if choice not in ALLOCATORS:
    raise ValueError(f"--allocator must be one of {ALLOCATORS}, got {choice!r}")
  if choice == "system" or (choice == "auto" and not _cpu_only()):
    return
  reexec_with_jemalloc()   # returns only if jemalloc is loaded or missing
  if choice == "jemalloc" and not jemalloc_loaded():
    raise RuntimeError("--allocator=jemalloc: no libjemalloc.so.2 found "
                       "(apt-get install libjemalloc2)")


def reexec_with_jemalloc(argv: Optional[Sequence[str]] = None) -> None:
  """Restarts this program with jemalloc preloaded, unless it already is or is missing.

  Call first thing in a command line's main(); returns only when no restart happens. The
  environment variable RPSM_JAX_REEXECED guards against loops.
  """
  if jemalloc_loaded() or os.environ.get("RPSM_JAX_REEXECED") == "1":
    return
  env = jemalloc_env()
  if env is None:
    return
  env["RPSM_JAX_REEXECED"] = "1"
  argv = list(sys.argv if argv is None else argv)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, "-m", _main_module()] + argv[1:], env)


def _main_module() -> str:
  """The `python -m` name of the running program (its __main__ module's spec)."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  if spec is None or not spec.name:
    raise RuntimeError("reexec_with_jemalloc needs a program started with `python -m`")
  name = spec.name
  return name[:-len(".__main__")] if name.endswith(".__main__") else name
