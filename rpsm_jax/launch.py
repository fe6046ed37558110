"""`python -m rpsm_jax.launch`: the command line of rpsm_jax.tools.launch."""

if __name__ == "__main__":
  from rpsm_jax.tools import launch
  launch.run()
