"""`tfds build data/mpii_2d` without TensorFlow, from the repository root:

  python -m data.mpii_2d --manual_dir=/data/mpii --data_dir=/data/tfds \
      --config=crop368

MPII_2D_WORKERS=<n> sets the number of worker processes.
"""

try:
  from data._builder_tools import cli
except ImportError:  # `python -m mpii_2d` from data/.
  from _builder_tools import cli

if __name__ == "__main__":
  cli.main(__file__, __doc__)
