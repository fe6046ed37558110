"""`tfds build data/synthetic_clips` without TensorFlow, from the repository root:

  python -m data.synthetic_clips --config=default --data_dir=/tmp/tfds
"""

# data/ is an installed package: `python -m data.<name>` finds it from the repository
# root and from an installed distribution alike.
from data._builder_tools import cli

if __name__ == "__main__":
  cli.main(__file__, __doc__)
