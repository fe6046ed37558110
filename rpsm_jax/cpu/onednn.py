"""oneDNN convolutions inside XLA:CPU programs, through JAX's FFI (custom calls).

Why: jaxlib's CPU convolutions (Eigen, YNN) run at about half of oneDNN's speed on the
narrow, high-resolution layers of small configs, and their weight gradient is the slowest
part (synthetic config, 80x80x16 layer, 40 images: 19-31 ms vs oneDNN 7.7 ms). oneDNN is
the library PyTorch's CPU convolutions use; called from inside the jitted step it keeps
XLA's fusions, donation and single dispatch around it.

How: csrc/onednn_conv.cc defines XLA FFI handlers for an NHWC/HWIO float32 convolution:
forward, forward with bias and ReLU fused, data gradient, weight gradient. `load()` compiles
it once per machine and oneDNN with the system C++ compiler, caches the library under
~/.cache/rpsm_jax (XDG_CACHE_HOME), and registers the handlers for the CPU platform.
`conv_general_dilated` is a drop-in for lax.conv_general_dilated with a custom_vjp that
calls them; `conv_bias_relu` the fused layer. When oneDNN or a compiler is missing,
`available()` says why and callers keep lax's convolutions.

Which oneDNN (find_install, first found): RPSM_JAX_ONEDNN_INCLUDE (+ RPSM_JAX_ONEDNN_LIB)
naming one installed elsewhere; the package index's wheels onednn-devel-cpu-gomp (headers)
+ onednn-cpu-gomp (libdnnl.so.3), rpsm_jax's dependencies on Linux x86_64, found through
their installed files (so `pip install --user` and virtual environments alike), linked
with an rpath to their lib directory; then CPATH and the system's include directories
(Debian/Ubuntu libdnnl-dev). oneDNN 2.x and 3.x both build. CXX names the compiler
(default c++).

GPUs and TPUs never take this path (rpsm_jax.cpu.convolution.make_conv only offers it for
the CPU backend): the custom calls are registered for the CPU platform only.
"""

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import re
import threading
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

_SOURCE = os.path.join(os.path.dirname(__file__), "csrc", "onednn_conv.cc")
# Kind names in the C++ enum's order (RpsmOnednnImplementation takes the index).
_TARGETS = {"forward": "RpsmOnednnConvForward", "data": "RpsmOnednnConvBackwardData",
            "weights": "RpsmOnednnConvBackwardWeights",
            "forward_bias_relu": "RpsmOnednnConvBiasReluForward"}
_PREFIX = "rpsm_onednn_conv_"
_SYSTEM_INCLUDE_DIRS = ("/usr/include", "/usr/local/include",
                        os.path.join(sys.prefix, "include"))

_lock = threading.Lock()
_state = {"library": None, "error": None, "install": None, "wait_policy": None}


def cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "rpsm_jax")


# (headers' distribution, library's distribution): the package index's CPU-only oneDNN 3.2
# with GNU OpenMP (the `onednn` wheel is a SYCL/TBB build with ~630 MB of runtimes).
WHEELS = ("onednn-devel-cpu-gomp", "onednn-cpu-gomp")
HINT = ("pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0 (Linux "
        "x86_64; rpsm_jax depends on them there) or apt-get install libdnnl-dev, and a C++ "
        "compiler (g++)")


class Install(NamedTuple):
  """A oneDNN to build against: include dir (holding oneapi/dnnl/dnnl.hpp), lib dir
  (None: the linker's default path), where it was found, the headers' version."""
  include: str
  lib: Optional[str]
  origin: str
  version: str


def _headers_version(include: str) -> str:
  """'3.2.0 (4011219)' from dnnl_version.h; '?' if unreadable."""
  try:
    with open(os.path.join(include, "oneapi", "dnnl", "dnnl_version.h")) as f:
      text = f.read()
  except OSError:
    return "?"
  fields = dict(re.findall(r"#define DNNL_VERSION_(MAJOR|MINOR|PATCH|HASH)\s+\"?(\w+)", text))
  return (f"{fields.get('MAJOR', '?')}.{fields.get('MINOR', '?')}.{fields.get('PATCH', '?')}"
          f" ({fields.get('HASH', '?')[:7]})")


def _wheel_file(name: str, suffix: str) -> Optional[tuple]:
  """(absolute path, version) of the first installed file of distribution `name` whose
  path ends in `suffix`; None if the distribution or file is not there."""
  try:
    dist = importlib.metadata.distribution(name)
  except importlib.metadata.PackageNotFoundError:
    return None
  for f in dist.files or []:
    if str(f).replace(os.sep, "/").endswith(suffix):
      path = os.path.realpath(f.locate())
      if os.path.exists(path):
        return path, dist.version
  return None


def _wheel_install() -> Optional[Install]:
  headers = _wheel_file(WHEELS[0], "include/oneapi/dnnl/dnnl.hpp")
  library = _wheel_file(WHEELS[1], "/libdnnl.so")
  if headers is None or library is None:
    return None
  include = os.path.dirname(os.path.dirname(os.path.dirname(headers[0])))
  return Install(include, os.path.dirname(library[0]),
                 f"wheels {WHEELS[0]} {headers[1]} + {WHEELS[1]} {library[1]}",
                 _headers_version(include))


def find_install() -> Install:
  """The oneDNN to build against (the module docstring's order); raises naming where it
  looked (checked before compiling, so machines without oneDNN do not pay a failed build)."""
  if os.environ.get("RPSM_JAX_ONEDNN_INCLUDE"):
    include = os.environ["RPSM_JAX_ONEDNN_INCLUDE"]
    if os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp")):
      return Install(include, os.environ.get("RPSM_JAX_ONEDNN_LIB") or None,
                     "RPSM_JAX_ONEDNN_INCLUDE", _headers_version(include))
    raise RuntimeError(f"oneapi/dnnl/dnnl.hpp not found in RPSM_JAX_ONEDNN_INCLUDE={include}")
  wheel = _wheel_install()
  if wheel is not None:
    return wheel
  dirs = os.environ.get("CPATH", "").split(os.pathsep) + list(_SYSTEM_INCLUDE_DIRS)
  dirs = [d for d in dirs if d]
  for d in dirs:
    if os.path.exists(os.path.join(d, "oneapi", "dnnl", "dnnl.hpp")):
      return Install(d, os.environ.get("RPSM_JAX_ONEDNN_LIB") or None, d, _headers_version(d))
  raise RuntimeError(f"oneapi/dnnl/dnnl.hpp not found in the wheels {'/'.join(WHEELS)} "
                     f"(not installed) nor in {dirs}")


def _build_flags(install: Install) -> list:
  flags = ["-I" + install.include]
  if install.lib:
    flags += ["-L" + install.lib, "-Wl,-rpath," + install.lib]
  return flags


def _library_path(compiler: str, install: Install) -> str:
  """Cache file name: changes with the source, jaxlib (FFI headers), the oneDNN built
  against (its directories and version) and the build flags."""
  digest = hashlib.sha256()
  with open(_SOURCE, "rb") as f:
    digest.update(f.read())
  digest.update(importlib.metadata.version("jaxlib").encode())
  digest.update(" ".join([compiler, install.version] + _build_flags(install)).encode())
  return os.path.join(cache_dir(), f"onednn_conv_{digest.hexdigest()[:16]}.so")


def _compile(compiler: str, install: Install, target: str) -> None:
  """Builds the library into a temporary file and renames it, so concurrent processes and
  interrupted builds never leave a half-written library under the final name."""
  os.makedirs(os.path.dirname(target), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(target))
  os.close(fd)
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
             "-isystem", jax.ffi.include_dir(), *_build_flags(install), _SOURCE, "-o", tmp, "-ldnnl"]
  try:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"compiling {_SOURCE} failed ({' '.join(command)}):\n"
                         f"{result.stderr.strip()[-2000:]}")
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


# GNU OpenMP's threads spin between parallel regions unless told otherwise. With any other
# busy process on the cores (a second run, pytest's second worker, XLA's own threads) the
# spinning threads take turns with the workers: on a 2-core AMD EPYC (AVX-512) two phase 2
# runs of configs/synthetic.py at once trained at 2.7 steps/s each with the default, 19
# with PASSIVE, against 35.7 / 32.8 for one run alone (README, "CPU convolutions").
OPENMP_WAIT_POLICY = "PASSIVE"
_OPENMP_USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@contextlib.contextmanager
def _openmp_wait_policy():
  """OMP_WAIT_POLICY=OPENMP_WAIT_POLICY while libgomp loads (it reads its environment
  once, then), unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT; the environment is
  restored afterwards, so child processes (the benchmark's Torch worker) see the user's."""
  user = {v: os.environ[v] for v in _OPENMP_USER_VARIABLES if v in os.environ}
  if user:
    _state["wait_policy"] = "the user's " + ", ".join(f"{k}={v}" for k, v in user.items())
    yield
    return
  _state["wait_policy"] = f"OMP_WAIT_POLICY={OPENMP_WAIT_POLICY}"
  os.environ["OMP_WAIT_POLICY"] = OPENMP_WAIT_POLICY
  try:
    yield
  finally:
    del os.environ["OMP_WAIT_POLICY"]


def load() -> ctypes.CDLL:
  """Builds (once per machine), loads and registers the FFI handlers; raises with the
  reason when that is not possible. Thread-safe; later calls return the loaded library."""
  with _lock:
    if _state["library"] is not None:
      return _state["library"]
    if _state["error"] is not None:
      raise RuntimeError(_state["error"])
    try:
      compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
      if not compiler:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
      install = find_install()
      path = _library_path(compiler, install)
      if not os.path.exists(path):
        _compile(compiler, install, path)
      with _openmp_wait_policy():
        library = ctypes.CDLL(path)
      for kind, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(_PREFIX + kind, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    except (RuntimeError, OSError) as e:
      _state["error"] = f"oneDNN convolutions unavailable: {e}. Needs oneDNN 2.x or 3.x: {HINT}."
      raise RuntimeError(_state["error"]) from e
    _state["install"] = install
    _state["library"] = library
    return library


def available() -> tuple[bool, str]:
  """(whether oneDNN convolutions can run here, why not)."""
  try:
    load()
  except RuntimeError as e:
    return False, str(e)
  return True, ""


def wait_policy() -> str:
  """How the loaded oneDNN's OpenMP threads wait, e.g. 'OMP_WAIT_POLICY=PASSIVE'."""
  load()
  return _state["wait_policy"]


def version() -> str:
  """The loaded oneDNN's version and origin, e.g. '3.2.0 (wheels onednn-devel-cpu-gomp/...)'."""
  library = load()
  out = ctypes.create_string_buffer(64)
  library.RpsmOnednnVersion(out, 64)
  return f"{out.value.decode()} ({_state['install'].origin})"


def implementation(kind: str, lhs_shape, rhs_shape, out_shape, strides, pad_top_left) -> str:
  """Name of the oneDNN implementation a convolution runs (e.g. 'brgconv:avx512_core')."""
  library = load()
  n, h, w, c = lhs_shape
  kh, kw, _, o = rhs_shape
  dims = (ctypes.c_int64 * 13)(n, h, w, c, kh, kw, o, out_shape[1], out_shape[2],
                               *strides, *pad_top_left)
  out = ctypes.create_string_buffer(256)
  library.RpsmOnednnImplementation(list(_TARGETS).index(kind), dims, out, 256)
  return out.value.decode()


# ----------------------------------------------------------------------------- the op


def static_args(strides, padding) -> tuple:
  """(strides, padding) as tuples of Python ints: hashable static arguments."""
  return (tuple(int(v) for v in strides),
          tuple(tuple(int(p) for p in pair) for pair in padding))


def _attrs(strides, padding):
  return dict(stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
              pad_top=np.int64(padding[0][0]), pad_left=np.int64(padding[1][0]))


def _call(kind, out_shape, *operands, strides, padding):
  load()   # registers the handlers before XLA compiles a call to them
  out = jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32)
  return jax.ffi.ffi_call(_PREFIX + kind, out, vmap_method="sequential")(
      *operands, **_attrs(strides, padding))


def _out_shape(x_shape, w_shape, strides, padding):
  return (x_shape[0],
          *[(x_shape[1 + i] + sum(padding[i]) - w_shape[i]) // strides[i] + 1 for i in (0, 1)],
          w_shape[3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, w, strides, padding):
  """NHWC x (N, H, W, C) float32 * HWIO w (KH, KW, C, O) -> (N, OH, OW, O), lax semantics
  (cross-correlation, `padding` ((top, bottom), (left, right)) in pixels, may be uneven)."""
  return _call("forward", _out_shape(x.shape, w.shape, strides, padding), x, w,
               strides=strides, padding=padding)


def _conv_fwd(x, w, strides, padding):
  return conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, dy):
  x, w = residuals
  dx = _call("data", x.shape, dy, w, strides=strides, padding=padding)
  dw = _call("weights", w.shape, x, dy, strides=strides, padding=padding)
  return dx, dw


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv_bias_relu(x, w, b, strides, padding):
  """relu(conv(x, w, strides, padding) + b), b (O,): one oneDNN pass (a post-op) instead of
  a convolution followed by XLA's bias-and-ReLU pass over its output."""
  return _call("forward_bias_relu", _out_shape(x.shape, w.shape, strides, padding), x, w, b,
               strides=strides, padding=padding)


def _conv_bias_relu_fwd(x, w, b, strides, padding):
  y = conv_bias_relu(x, w, b, strides, padding)
  return y, (x, w, y)


def _conv_bias_relu_bwd(strides, padding, residuals, dy):
  x, w, y = residuals
  dz = jnp.where(y > 0, dy, 0.0)   # ReLU's gradient, from its output
  dx, dw = _conv_bwd(strides, padding, (x, w), dz)
  return dx, dw, jnp.sum(dz, axis=(0, 1, 2))


conv_bias_relu.defvjp(_conv_bias_relu_fwd, _conv_bias_relu_bwd)


def eligible(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count=1) -> bool:
  """Whether lax.conv_general_dilated(...) is an NHWC/HWIO float32 convolution without
  dilation or groups, with non-negative explicit padding and static shapes."""
  if lhs.ndim != 4 or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return False
  if feature_group_count != 1 or isinstance(padding, str):
    return False
  if any(p < 0 for pair in padding for p in pair):
    return False
  for dilation in (lhs_dilation, rhs_dilation):
    if dilation is not None and tuple(dilation) != (1, 1):
      return False
  if not all(isinstance(d, int) for d in tuple(lhs.shape) + tuple(rhs.shape)):
    return False
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
  """Drop-in for lax.conv_general_dilated: oneDNN for eligible() convolutions, lax else."""
  if not kwargs and eligible(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                             dimension_numbers, feature_group_count):
    return conv(lhs, rhs, *static_args(window_strides, padding))
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers, feature_group_count,
                                  precision=precision, **kwargs)
