"""rpsm_jax: Recurrent 3D Pose Sequence Machines in JAX/Flax."""

from rpsm_jax import xla_cpu as _xla_cpu

# Must run before JAX creates its CPU client: XLA reads XLA_FLAGS once, at that moment.
CPU_CONV_FLAG_IN_EFFECT = _xla_cpu.configure()
