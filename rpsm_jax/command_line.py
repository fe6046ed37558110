"""What every absl command line of rpsm_jax (predict, export, streaming, benchmark) runs."""

from typing import Callable

from absl import app

from rpsm_jax.cpu import xla_cpu


def run_app(main: Callable, define_flags: Callable[[], None]) -> None:
  """Sets XLA:CPU options, defines the program's flags, then `app.run(main)`.

  The options must be set before JAX creates its CPU client. Flags are defined here, only
  when a module runs as a program, so that importing several command-line modules (as
  the tests do) cannot clash.
  """
  xla_cpu.configure()
  define_flags()
  app.run(main)
