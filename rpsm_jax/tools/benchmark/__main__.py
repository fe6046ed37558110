"""`python -m rpsm_jax.tools.benchmark` (or rpsm_jax.benchmark): JAX vs the Torch port.

  python -m rpsm_jax.benchmark --config=configs/synthetic.py [--frameworks=jax,torch] ...
"""

from rpsm_jax.tools.benchmark import cli

if __name__ == "__main__":
  cli.run()
