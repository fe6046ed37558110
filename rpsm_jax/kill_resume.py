"""`python -m rpsm_jax.kill_resume`: the command line of rpsm_jax.tools.kill_resume."""

if __name__ == "__main__":
  from rpsm_jax.tools import kill_resume
  kill_resume.run()
