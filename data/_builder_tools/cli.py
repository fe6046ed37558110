"""`tfds build data/<name>` without TensorFlow: what each dataset's `__main__.py` runs.

The `tfds` command of tfds 4.9.10 imports its `convert_format` command, which needs
TensorFlow, before it parses any flag, so `tfds build` fails where TensorFlow is not
installed. `main` runs the same `build` command, with the same flags, on one dataset
folder. With TensorFlow installed, `tfds build data/<name> --config=...` does the same.
"""

import pathlib
import sys

from absl import app
from absl import logging


def main(main_file: str, description: str) -> None:
  """Runs `tfds build <folder of main_file>` with this process's flags.

  Args:
    main_file: `__file__` of a dataset's `__main__.py`.
    description: the dataset's usage, shown by --help above this module's.
  """
  # Here, not at the top: spawned workers import __main__ but never build.
  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.scripts.cli import build
  from tensorflow_datasets.scripts.cli import cli_utils
  # pylint: enable=g-import-not-at-top

  # The dataset folder is the first positional argument of `tfds build`.
  sys.argv.insert(1, str(pathlib.Path(main_file).resolve().parent))
  parse = cli_utils.make_flags_parser(build.Args,
                                      description=f"{description}\n{__doc__}")

  def run(args: build.Args) -> None:
    logging.set_verbosity(logging.INFO)
    args.execute()

  app.run(run, flags_parser=parse)
