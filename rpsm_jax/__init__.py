"""rpsm_jax: Recurrent 3D Pose Sequence Machines in JAX/Flax.

Importing the package has no side effects. Entry points (rpsm_jax.main, predict, benchmark,
...) set XLA:CPU options and the allocator themselves (rpsm_jax.cpu.xla_cpu) before JAX
starts; the layers, from the bottom up: joints, poses, metrics, workdir -> models ->
pipeline -> training, evaluation -> apps, tools. rpsm_jax.cpu holds the CPU-only kernels
that the models receive as an argument.
"""
