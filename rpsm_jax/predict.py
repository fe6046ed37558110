"""`python -m rpsm_jax.predict`: the command line of rpsm_jax.apps.predict."""

if __name__ == "__main__":
  from rpsm_jax.apps import predict
  predict.run()
