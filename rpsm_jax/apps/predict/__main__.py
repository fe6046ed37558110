"""`python -m rpsm_jax.apps.predict` (or rpsm_jax.predict): 3D poses of a video or frames.

  python -m rpsm_jax.predict --workdir=<trained run> --input=<video or folder of frames> \
      --output=<dir> [--boxes=<per-frame person boxes>] ...
"""

from rpsm_jax.apps.predict import cli

if __name__ == "__main__":
  cli.run()
