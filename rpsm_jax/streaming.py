"""`python -m rpsm_jax.streaming`: the command line of rpsm_jax.apps.streaming."""

if __name__ == "__main__":
  from rpsm_jax.apps import streaming
  streaming.run()
