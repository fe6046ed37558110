"""`tfds build data/humaneva_clips` without TensorFlow, from the repository root:

  python -m data.humaneva_clips --manual_dir=/data/humaneva --data_dir=/data/tfds \
      --config=crop368_step1

HUMANEVA_CLIPS_WORKERS=<n> sets the number of worker processes.
"""

try:
  from data._builder_tools import cli
except ImportError:  # `python -m humaneva_clips` from data/.
  from _builder_tools import cli

if __name__ == "__main__":
  cli.main(__file__, __doc__)
