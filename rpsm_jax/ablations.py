"""`python -m rpsm_jax.ablations --config=configs/<name>.py --workdir=<dir>`: the paper's
Table 4 variants under one budget (rpsm_jax.tools.ablations); rerun to resume."""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import jax

from rpsm_jax import command_line
from rpsm_jax import distributed
from rpsm_jax.cpu import xla_cpu

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "The base configuration (a configs/*.py file).", lock_config=True)
flags.DEFINE_string("workdir", None, "One folder per variant, and the tables, go here.")
flags.DEFINE_list("variants", [], "Variants to run (default: all of "
                  "rpsm_jax.tools.ablations.VARIANTS).")
flags.DEFINE_integer("seeds", 1, "Phase 2 runs per variant (config.seed, +1, ...); with "
                     "more than one, the tables give means, standard deviations and "
                     "whether each ordering exceeds twice its standard error.")
command_line.define_allocator_flag()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  command_line.apply_allocator_flag(FLAGS.config)
  from rpsm_jax.tools import ablations  # pylint: disable=g-import-not-at-top
  distributed.initialize()   # from the environment (rpsm_jax.distributed)
  out = ablations.run_ablations(FLAGS.config, FLAGS.workdir, FLAGS.variants or None,
                                 FLAGS.seeds)
  if out.get("preempted"):
    logging.warning("Stopped in variant %s; rerun the same command to resume.",
                    out.get("variant"))
    return
  print(open(f"{FLAGS.workdir}/{ablations.RESULTS_MD}").read())


if __name__ == "__main__":
  xla_cpu.configure()   # before JAX creates its CPU client
  jax.config.config_with_absl()
  app.run(main)
