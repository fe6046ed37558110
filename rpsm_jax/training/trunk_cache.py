"""A frozen trunk's features, computed once per training frame (config.trunk_cache_copies).

With the trunk frozen (the recipe's phase 2) its output depends only on the input frame, so
running it at every step repeats work: on configs/synthetic.py it is over half of a step,
and decoding and resizing the frames is most of the rest. The cache renders every training
frame `copies` times, each with its own draw of config.augment (fixed per seed, copy and
frame), runs the trunk on them once, and keeps the features in host memory; each frame of
a training clip then uses one of its copies, drawn per step. Augmentation therefore varies
over `copies` draws per frame instead of a fresh draw each time the frame is seen (and
config.augment.per_clip_probability applies per rendering).
Evaluation does not use the cache: it runs the whole model on the frames.
"""

import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from rpsm_jax import models
from rpsm_jax import poses

# At most this fraction of the machine's memory goes to the cache.
MEMORY_FRACTION = 0.5


def physical_memory_bytes() -> int:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class TrunkCache:
  """features (copies, N, H/8, W/8, C): copy c of training record n, in the trunk's dtype."""

  def __init__(self, features: np.ndarray):
    self.features = features

  def lookup(self, records: np.ndarray, copy: np.ndarray) -> np.ndarray:
    """records, copy (B, T) -> (B, T, H/8, W/8, C); padded frames (record -1) get copy 0 of
    record 0 (the loss masks them)."""
    return self.features[copy, np.maximum(records, 0)]

  @classmethod
  def build(cls, model: models.RPSM, trunk_params, loader, copies: int,
            batch_size: int = 64) -> "TrunkCache":
    """Runs the trunk on `copies` renderings of every record of `loader` (a ClipLoader),
    `batch_size` frames per call (the caller passes the frames of one evaluation batch per
    device, so conv_algorithm=auto times the trunk's layers once for both).

    Raises ValueError (naming config.trunk_cache_copies) when the cache would take more
    than MEMORY_FRACTION of this machine's memory.
    """
    n, size = len(loader.index.sequence), loader.input_size
    trunk = models.trunk_of(model)
    apply = jax.jit(lambda p, x: trunk.apply({"params": p}, poses.model_input(x)))
    out = jax.eval_shape(apply, trunk_params,
                         jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.uint8))
    shape = (copies, n) + out.shape[1:]
    nbytes = int(np.prod(shape)) * np.dtype(out.dtype).itemsize
    limit = MEMORY_FRACTION * physical_memory_bytes()
    if nbytes > limit:
      raise ValueError(
          f"config.trunk_cache_copies={copies}: the trunk features of {n} training frames "
          f"x {copies} copies ({shape[2:]} {np.dtype(out.dtype).name} each) would take "
          f"{nbytes / 2**30:.1f} GiB, over {MEMORY_FRACTION:.0%} of this machine's "
          f"{physical_memory_bytes() / 2**30:.1f} GiB; lower it, or 0 to run the trunk "
          "every step")
    start = time.perf_counter()
    features = np.empty(shape, out.dtype)
    pending = []   # (copy, records, device array) dispatched, not yet copied out

    def collect():
      for c, records, result in pending:
        features[c, records] = np.asarray(result)[:len(records)]
      pending.clear()

    for lo in range(0, n, batch_size):
      records = np.arange(lo, min(lo + batch_size, n))
      # Each frame is decoded once for all its copies; this batch renders on the host
      # while the trunk still runs on the previous one (dispatch is asynchronous).
      rendered = loader.render_copies(records, [
          [loader.cached_augmentation(c, r) for r in records] for c in range(copies)])
      collect()
      for c, (images, _) in enumerate(rendered):
        # Full batches only, so one compiled shape serves every call.
        padded = np.zeros((batch_size,) + images.shape[1:], images.dtype)
        padded[:len(records)] = images
        pending.append((c, records, apply(trunk_params, padded)))
    collect()
    logging.info("Trunk cache: %d copies x %d training frames, %s %s each (%.0f MB), "
                 "built in %.1f s; the frozen trunk does not run in training steps",
                 copies, n, shape[2:], np.dtype(out.dtype).name, nbytes / 1e6,
                 time.perf_counter() - start)
    return cls(features)
