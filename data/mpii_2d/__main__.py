"""`tfds build data/mpii_2d` without TensorFlow.

The `tfds` command of tfds 4.9.10 imports its `convert_format` command, which needs
TensorFlow, before it parses any flag. This runs the same `build` command, with the
same flags, on this folder (from the repository root):

  python -m data.mpii_2d --manual_dir=/data/mpii --data_dir=/data/tfds \
      --config=crop368

With TensorFlow installed, `tfds build data/mpii_2d --manual_dir=...` does the
same. MPII_2D_WORKERS=<n> sets the number of worker processes.
"""

import pathlib
import sys

from absl import app
from absl import logging
from tensorflow_datasets.scripts.cli import build
from tensorflow_datasets.scripts.cli import cli_utils


def main() -> None:
  # The dataset folder is the first positional argument of `tfds build`.
  sys.argv.insert(1, str(pathlib.Path(__file__).resolve().parent))
  parse = cli_utils.make_flags_parser(build.Args, description=__doc__)

  def run(args: build.Args) -> None:
    logging.set_verbosity(logging.INFO)
    args.execute()

  app.run(run, flags_parser=parse)


if __name__ == "__main__":
  main()
