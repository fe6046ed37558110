"""Developer tools: the JAX-vs-Torch benchmark, the Torch port, summary, kill-resume."""
