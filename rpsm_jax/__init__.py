"""rpsm_jax: Recurrent 3D Pose Sequence Machines in JAX/Flax."""
