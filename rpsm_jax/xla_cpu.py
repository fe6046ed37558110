"""XLA:CPU options that must be set before the first JAX computation.

jaxlib 0.10's default CPU pipeline hands every convolution to the YNN library, whose
weight-gradient convolution is several times slower than XLA's Eigen path (DESIGN.md: a
64->64 3x3 layer at 128x128 took 1040 ms vs 68-85 ms). Excluding individual convolutions
from YNN fusion makes CPU training 3-4x faster. The flag only exists in the jaxlib versions
listed here (an unknown flag aborts XLA), and only affects the CPU backend, so GPU and TPU
runs are unchanged.
"""

import importlib.metadata
import os

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_JAXLIB_WITH_YNN_FLAG = ("0.10.",)


def configure() -> bool:
  """Adds the CPU convolution flag to XLA_FLAGS when this jaxlib knows it.

  Does nothing when RPSM_JAX_KEEP_XLA_FLAGS=1 (for A/B measurements) or when the user
  already set the flag. Returns whether the flag is in effect.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return True
  if os.environ.get("RPSM_JAX_KEEP_XLA_FLAGS") == "1":
    return False
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  if not version.startswith(_JAXLIB_WITH_YNN_FLAG):
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}".strip()
  return True
