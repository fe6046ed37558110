"""`python -m rpsm_jax.export`: the command line of rpsm_jax.apps.export."""

if __name__ == "__main__":
  from rpsm_jax.apps import export
  export.run()
