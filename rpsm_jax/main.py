"""Command line: `python -m rpsm_jax.main --config=configs/<name>.py --workdir=<dir>`.

Only parses flags, logs the process and its devices, and calls into the library.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import jax

from rpsm_jax import command_line
from rpsm_jax import distributed
from rpsm_jax import logs
from rpsm_jax.cpu import xla_cpu

FLAGS = flags.FLAGS
_MODES = ("train", "eval", "summary", "pretrain2d")

config_flags.DEFINE_config_file(
    "config", None, "Training configuration (a configs/*.py file).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_enum("mode", "train", _MODES,
                  "train: the recipe (2D pretraining when config.pretrain2d.enabled, "
                  "then 3D training and evaluation); eval: evaluate a checkpoint; "
                  "summary: print parameters and GFLOPs and exit; pretrain2d: pretrain "
                  "the trunk on 2D joint heatmaps (config.pretrain2d).")
flags.DEFINE_integer("checkpoint_step", None,
                     "--mode=eval: the checkpoint step to evaluate (default: latest).")
command_line.define_allocator_flag()
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process runs: host:port of process 0 (or "
                    "RPSM_COORDINATOR_ADDRESS; RPSM_DISTRIBUTED=1 detects SLURM, TPU pods, "
                    "Open MPI). See rpsm_jax.distributed.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")
flags.DEFINE_integer("distributed_timeout", distributed.DEFAULT_TIMEOUT_S,
                     "Seconds to wait for every process to join before failing.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  command_line.apply_allocator_flag(FLAGS.config)
  logs.quiet_library_logs()
  config = FLAGS.config
  if FLAGS.mode == "summary":
    from rpsm_jax.tools import summary  # pylint: disable=g-import-not-at-top
    summary.print_summary(config)
    return
  if not FLAGS.workdir:
    raise app.UsageError(f"--workdir is required for --mode={FLAGS.mode}")
  try:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id, FLAGS.distributed_timeout)
  except distributed.DistributedError as e:
    raise app.UsageError(str(e)) from e
  from rpsm_jax.training import train  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d / %d, local devices %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  if FLAGS.mode == "pretrain2d":
    from rpsm_jax.training import pretrain2d  # pylint: disable=g-import-not-at-top
    pretrain2d.pretrain(config, FLAGS.workdir)
  elif FLAGS.mode == "train":
    from rpsm_jax.training import recipe  # pylint: disable=g-import-not-at-top
    recipe.run(config, FLAGS.workdir)
  else:
    from rpsm_jax.training import recipe  # pylint: disable=g-import-not-at-top
    train.evaluate_checkpoint(recipe.phase2_config(config, FLAGS.workdir), FLAGS.workdir,
                              FLAGS.checkpoint_step)


if __name__ == "__main__":
  xla_cpu.configure()   # before JAX creates its CPU client
  jax.config.config_with_absl()
  app.run(main)
