"""`tfds build data/h36m_clips` without TensorFlow, from the repository root:

  python -m data.h36m_clips --manual_dir=/data/h36m --data_dir=/data/tfds \
      --config=crop368_step5

H36M_CLIPS_WORKERS=<n> sets the number of worker processes.
"""

try:
  from data._builder_tools import cli
except ImportError:  # `python -m h36m_clips` from data/.
  from _builder_tools import cli

if __name__ == "__main__":
  cli.main(__file__, __doc__)
