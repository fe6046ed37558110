"""`python -m rpsm_jax.benchmark`: the command line of rpsm_jax.tools.benchmark."""

if __name__ == "__main__":
  from rpsm_jax.tools import benchmark
  benchmark.run()
