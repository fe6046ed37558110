"""`tfds build data/humaneva_clips` without TensorFlow, from the repository root:

  python -m data.humaneva_clips --manual_dir=/data/humaneva --data_dir=/data/tfds \
      --config=crop368_step1

HUMANEVA_CLIPS_WORKERS=<n> sets the number of worker processes.
"""

# data/ is an installed package: `python -m data.<name>` finds it from the repository
# root and from an installed distribution alike.
from data._builder_tools import cli

if __name__ == "__main__":
  cli.main(__file__, __doc__)
