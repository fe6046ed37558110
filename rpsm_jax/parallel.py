"""Data parallelism over every process's devices: the mesh, shardings and global arrays.

One 1-D mesh spans `jax.devices()` (all processes). Parameters and optimiser state are
replicated on it; batches are split along it, each process holding the rows its devices
compute (`global_batch`). The pmapped alternative keeps a copy per local device and meets
the same global arrays at checkpoints and evaluation (`from_pmap`, `to_pmap`).
"""

from typing import Any

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

AXIS = "data"
PARALLELISMS = ("global", "pmap")


def create_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the mesh (rows of process p on p's devices)."""
  return NamedSharding(mesh, PartitionSpec(AXIS))


def local_rows(global_rows: int) -> slice:
  """This process's rows of a global batch of `global_rows` (its devices' contiguous
  share, in process order: the layout make_array_from_process_local_data expects)."""
  per_process = global_rows // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def global_batch(local: dict, mesh: Mesh) -> dict:
  """This process's rows (B / processes, ...) -> global arrays (B, ...) split over mesh."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host values (the same on every process) -> global arrays replicated on the mesh."""
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


def as_replicated(tree: Any, mesh: Mesh) -> Any:
  """Parameters as replicated global arrays: moved onto the mesh in a single-process run
  (host or single-device arrays); multi-process callers pass global arrays already."""
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated(mesh))
  return tree


def gather(tree: Any) -> Any:
  """Global arrays -> numpy with their full value on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def gather_rows(local: Any) -> Any:
  """Each process's numpy rows -> all processes' rows concatenated in process order."""
  if jax.process_count() == 1:
    return local
  return multihost_utils.process_allgather(local, tiled=True)


def to_pmap(tree: Any) -> Any:
  """Replicated global arrays -> (local devices, ...) copies for a pmapped step.

  Goes through a host copy (at start and resume only), so the result never aliases a
  buffer that a donating step may delete.
  """
  devices = jax.local_devices()
  sharding = NamedSharding(Mesh(np.asarray(devices), ("local",)), PartitionSpec("local"))

  def put(x):
    local = np.asarray(x.addressable_data(0))
    return jax.device_put(np.broadcast_to(local, (len(devices),) + local.shape), sharding)
  return jax.tree.map(put, tree)


def from_pmap(tree: Any, mesh: Mesh) -> Any:
  """(local devices, ...) copies of a pmapped step -> replicated global arrays (no copy
  through the host: each device's own copy becomes its shard)."""
  sharding = replicated(mesh)
  local = set(sharding.addressable_devices)

  def convert(x):
    shape = x.shape[1:]
    shards = [s.data.reshape(shape) for s in x.addressable_shards if s.device in local]
    return jax.make_array_from_single_device_arrays(shape, sharding, shards)
  return jax.tree.map(convert, tree)


def split_local_devices(batch: dict) -> dict:
  """(B_local, ...) -> (local devices, B_local / local devices, ...) for pmap."""
  n = jax.local_device_count()

  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"{x.shape[0]} rows do not split over {n} local devices")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])
  return {k: split(v) for k, v in batch.items()}
