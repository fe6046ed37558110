"""The command line of the benchmark: flags, `main`, `run` (`python -m rpsm_jax.benchmark`)."""

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from rpsm_jax import command_line
from rpsm_jax.tools.benchmark import suite
from rpsm_jax.tools.benchmark import table
from rpsm_jax.tools.benchmark.runners import FRAMEWORKS

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program (importing must not clash with other CLIs)."""
  config_flags.DEFINE_config_file(
      "config", None, "Model configuration (a configs/*.py file).", lock_config=True)
  flags.DEFINE_list("frameworks", list(FRAMEWORKS), "Frameworks to measure.")
  flags.DEFINE_integer("batch", 0, "Clips per step (0: config.batch_size).")
  flags.DEFINE_integer("repeats", 5, "Timings per framework and phase.")
  flags.DEFINE_integer("steps", 2, "Steps per timing.")
  flags.DEFINE_integer("warmup", 1, "Untimed calls after the first.")
  flags.DEFINE_string("json", None, "Write the results to this JSON file.")
  flags.DEFINE_bool("torch_compile", False, "torch.compile the port.")
  flags.DEFINE_bool("channels_last", False, "Run the port in channels_last memory format.")
  flags.DEFINE_bool("pipeline", False, "Also measure the input pipeline.")
  flags.DEFINE_integer("pipeline_workers", 0, "Threads of the pipeline's second "
                       "measurement (0: usable CPUs).")
  flags.DEFINE_bool("streaming", False, "Also run the streaming benchmark.")
  flags.DEFINE_integer("torch_threads", 0, "Torch's CPU threads (0: as many as XLA uses).")
  flags.DEFINE_integer("matmul_size", 0, "Roofline matmul side (0: 2048 CPU, 8192 GPU).")
  flags.DEFINE_bool("torch_worker", True, "On CPUs, run the Torch port in a worker process "
                    "(its own OpenMP runtime and allocator state); --notorch_worker: in "
                    "this process.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/synthetic.py")
  results = suite.run_benchmark(
      FLAGS.config, FLAGS.frameworks, FLAGS.batch, FLAGS.repeats, FLAGS.steps,
      FLAGS.warmup, FLAGS.torch_compile, FLAGS.channels_last, FLAGS.pipeline,
      FLAGS.pipeline_workers, streaming=FLAGS.streaming, matmul_size=FLAGS.matmul_size,
      torch_threads=FLAGS.torch_threads, isolate_torch=None if FLAGS.torch_worker else False,
      log=lambda m: print(m, file=sys.stderr, flush=True))
  print(table.format_table(results))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(results, f, indent=2)


def run():
  """The command line: `python -m rpsm_jax.benchmark`."""
  command_line.run_app(main, define_flags, allocator=True)

