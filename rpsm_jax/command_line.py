"""What every absl command line of rpsm_jax (main, ablations, benchmark, predict, export,
streaming) runs: XLA:CPU options, and for the ones that compute, the --allocator flag."""

from typing import Callable

from absl import app
from absl import flags
from absl import logging

from rpsm_jax.cpu import xla_cpu


def define_allocator_flag() -> None:
  """--allocator (xla_cpu.ALLOCATORS); apply it with `apply_allocator_flag()`."""
  flags.DEFINE_enum("allocator", "auto", xla_cpu.ALLOCATORS, xla_cpu.ALLOCATOR_HELP)


def apply_allocator_flag(config=None) -> None:
  """First thing in main(): may restart the program under another malloc (so nothing
  before it should have side effects), then logs the malloc in use once.

  config: the run's config; its `cpu_glibc_tuned` lets "auto" use glibc-tuned malloc.
  """
  auto_glibc_tuned = bool(config is not None and config.get("cpu_glibc_tuned", False))
  try:
    xla_cpu.use_allocator(flags.FLAGS.allocator, auto_glibc_tuned)
  except RuntimeError as e:
    raise app.UsageError(str(e)) from e
  logging.info("malloc: %s", xla_cpu.allocator_in_use())


def run_app(main: Callable, define_flags: Callable[[], None], allocator: bool = False) -> None:
  """Sets XLA:CPU options, defines the program's flags, then `app.run(main)`.

  The options must be set before JAX creates its CPU client. Flags are defined here, only
  when a module runs as a program, so that importing several command-line modules (as
  the tests do) cannot clash. allocator: also define --allocator and apply it before
  `main` runs.
  """
  xla_cpu.configure()
  define_flags()
  if allocator:
    define_allocator_flag()

    def main_under_allocator(argv):
      apply_allocator_flag(flags.FLAGS["config"].value if "config" in flags.FLAGS else None)
      return main(argv)
    app.run(main_under_allocator)
  else:
    app.run(main)
