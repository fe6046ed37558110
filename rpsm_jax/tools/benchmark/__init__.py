r"""`python -m rpsm_jax.benchmark`: JAX vs the Torch port, side by side, in one run.

  python -m rpsm_jax.benchmark --config=configs/synthetic.py [--frameworks=jax,torch]
      [--batch=N] [--repeats=N] [--steps=N] [--json=FILE] [--torch_compile]
      [--channels_last] [--pipeline] [--streaming] [--torch_threads=N]
      [--allocator=auto|jemalloc|glibc-tuned|system] [--notorch_worker] [--config.field=value ...]

For the same config, batch (clips of config.clip_length frames), input size and weights,
each framework runs
- the train step: forward, the paper's loss, backward and the optimiser update. JAX runs
  `train.compile_train_step` (what training runs); Torch runs the port with the matching
  torch.optim optimiser;
- inference: the forward pass alone.
Both take the uint8 frames as the pipeline delivers them (already on the device) and
convert them inside the step. Timings of the frameworks are interleaved repeat by repeat,
so a noisy, shared machine slows both alike; each timing runs `steps` steps back to back
and the table gives the median and [min, max] over `repeats` timings after warm-up. On
CPUs the port runs in a worker process (ProcessRunner: the two would otherwise share one
OpenMP runtime and slow each other), driven from this one.

FLOPs: forward FLOPs per frame are summary.forward_flops_per_frame(optimized=False), XLA's
cost analysis of the forward pass's unoptimised HLO (so GPUs count convolutions too); a
train step counts 3x forward (backward = 2x forward, the usual model-FLOPs convention;
the optimiser is negligible), for both frameworks alike. XLA's own count of the train step is reported beside it. The roofline is
a jitted square fp32 jnp.dot (2048 on CPUs, 8192 on GPUs) at JAX's default precision (TF32
tensor cores on recent NVIDIA GPUs), timed inside the same interleaved loop, so it sees the
same machine load.

Memory: on CPUs, the rise of the process's resident set over the warm-up calls (VmHWM
after resetting it through /proc/self/clear_refs, minus VmRSS before), after returning
freed memory to the OS (glibc malloc_trim or jemalloc purge): activations, gradients and
temporaries, not the parameters already resident. On GPUs, torch.cuda.max_memory_allocated
and, for JAX, XLA's buffer assignment of the compiled step (jax's own peak counter cannot
be reset and also holds compile-time autotuning scratch; it is in the JSON). XLA's buffer
peak is reported on every backend.

CPU runs restart themselves under a faster malloc (--allocator=auto, the default, when no
accelerator plugin is installed): jemalloc preloaded when the system has it (`apt-get
install libjemalloc2`), else glibc's malloc with the tunables of cpu/xla_cpu.py (heap in
transparent huge pages, freed memory kept). XLA:CPU allocates its buffers per call and
untuned glibc maps large ones fresh each time; on a 2-core AVX-512 EPYC the synthetic train
step ran ~20% faster with either (jemalloc ~5% more), inference ~12%. The Torch worker
inherits the same environment, so both frameworks run under the same malloc.
--allocator=system keeps the process's malloc.

Modules: measure (memory, timing, spreads), environment (the machine), runners (what is
timed: JAX, Torch, worker process, roofline), input_rate (--pipeline), suite
(`run_benchmark`), table (`format_table`), cli (flags, `run`).
"""

from rpsm_jax.tools.benchmark.cli import run
from rpsm_jax.tools.benchmark.suite import run_benchmark
from rpsm_jax.tools.benchmark.table import format_table

__all__ = ["format_table", "run", "run_benchmark"]
