"""The input pipeline's rate, measured apart from the model (`--pipeline`)."""

import contextlib
import tempfile
import time
from typing import Sequence

from rpsm_jax.pipeline import datasets
from rpsm_jax.pipeline import input_pipeline


def pipeline_throughput(config, workers: Sequence[int], steps: int) -> dict:
  """Training batches/s of input_pipeline on each number of worker threads, as frames/s.

  Uses config.dataset when it is prepared; otherwise builds synthetic_clips/tiny into a
  temporary data_dir (seconds) and reads that at the config's input size and batch.
  Returns {"dataset": name/config, "frames_per_s_<n>_workers": x, ["built_s": s]}.
  """
  config = config.copy_and_resolve_references()
  out = {}
  with contextlib.ExitStack() as stack:
    if not datasets.get_builder(config.dataset).is_prepared():
      config.dataset.name, config.dataset.builder_config = "synthetic_clips", "tiny"
      config.dataset.data_dir = stack.enter_context(tempfile.TemporaryDirectory())
      config.dataset.build_if_missing = True
      config.model.num_joints = 17
      start = time.perf_counter()
      datasets.prepare(config.dataset)
      out["built_s"] = time.perf_counter() - start
    out["dataset"] = f"{config.dataset.name}/{config.dataset.builder_config or 'default'}"
    workdir = stack.enter_context(tempfile.TemporaryDirectory())
    frames = config.batch_size * config.clip_length
    for n in workers:
      config.dataset.num_workers = n
      loader = input_pipeline.create_pipeline(config, workdir).train
      loader.batch(0)  # first batch opens the files
      start = time.perf_counter()
      for step in range(1, steps + 1):
        loader.batch(step)
      out[f"frames_per_s_{n}_workers"] = frames * steps / (time.perf_counter() - start)
      loader.close()
  return out

