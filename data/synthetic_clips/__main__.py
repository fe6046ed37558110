"""`tfds build data/synthetic_clips` without TensorFlow, from the repository root:

  python -m data.synthetic_clips --config=default --data_dir=/tmp/tfds
"""

try:
  from data._builder_tools import cli
except ImportError:  # `python -m synthetic_clips` from data/.
  from _builder_tools import cli

if __name__ == "__main__":
  cli.main(__file__, __doc__)
