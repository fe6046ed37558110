"""`tfds build data/mpii_2d` without TensorFlow, from the repository root:

  python -m data.mpii_2d --manual_dir=/data/mpii --data_dir=/data/tfds \
      --config=crop368

MPII_2D_WORKERS=<n> sets the number of worker processes.
"""

# data/ is an installed package: `python -m data.<name>` finds it from the repository
# root and from an installed distribution alike.
from data._builder_tools import cli

if __name__ == "__main__":
  cli.main(__file__, __doc__)
