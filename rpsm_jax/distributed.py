"""Joining a multi-process run: explicit settings, or the cluster's own description.

Where the settings come from, first match wins:
1. Arguments (rpsm_jax.main's --coordinator_address, --num_processes, --process_id).
2. The variables this project reads: RPSM_COORDINATOR_ADDRESS or JAX_COORDINATOR_ADDRESS
   (host:port of process 0), RPSM_NUM_PROCESSES or JAX_NUM_PROCESSES, RPSM_PROCESS_ID or
   JAX_PROCESS_ID. (jax 0.10's `jax.distributed.initialize()` reads only the address.)
3. RPSM_DISTRIBUTED=1: jax's cluster detection (SLURM, TPU pod slices, Open MPI).
Otherwise the run is single-process. CPU runs use gloo collectives across processes. A
coordinator that does not answer within `timeout_s` ends start-up with an error naming it.
"""

import os
import socket
import time
from typing import Optional

from absl import logging
import jax

DEFAULT_TIMEOUT_S = 120


class DistributedError(RuntimeError):
  pass


def _env(*names: str) -> Optional[str]:
  for name in names:
    if os.environ.get(name):
      return os.environ[name]
  return None


def _int(value: Optional[str], what: str) -> Optional[int]:
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise DistributedError(f"{what} must be an integer, got {value!r}") from None


def settings(coordinator_address: Optional[str] = None,
             num_processes: Optional[int] = None,
             process_id: Optional[int] = None) -> Optional[dict]:
  """The keyword arguments of jax.distributed.initialize, {} for cluster detection, or
  None for a single-process run."""
  address = coordinator_address or _env("RPSM_COORDINATOR_ADDRESS",
                                        "JAX_COORDINATOR_ADDRESS")
  if num_processes is None:
    num_processes = _int(_env("RPSM_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
                         "RPSM_NUM_PROCESSES / JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _int(_env("RPSM_PROCESS_ID", "JAX_PROCESS_ID"),
                      "RPSM_PROCESS_ID / JAX_PROCESS_ID")
  if address is None and num_processes is None and process_id is None:
    return {} if os.environ.get("RPSM_DISTRIBUTED") == "1" else None
  if address is None or num_processes is None or process_id is None:
    if os.environ.get("RPSM_DISTRIBUTED") == "1" and address:
      return {"coordinator_address": address}   # the rest from the cluster
    raise DistributedError(
        "a multi-process run needs the coordinator address, the number of processes and "
        "this process's id (--coordinator_address/--num_processes/--process_id or "
        f"RPSM_COORDINATOR_ADDRESS/RPSM_NUM_PROCESSES/RPSM_PROCESS_ID); got address="
        f"{address!r}, num_processes={num_processes!r}, process_id={process_id!r}")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise DistributedError(f"process id {process_id} is not in [0, {num_processes})")
  if ":" not in address:
    raise DistributedError(f"coordinator address {address!r} must be host:port")
  return {"coordinator_address": address, "num_processes": num_processes,
          "process_id": process_id}


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
  """Joins the run the arguments or environment describe; returns whether it did.

  Must run before anything touches a JAX device.
  """
  kwargs = settings(coordinator_address, num_processes, process_id)
  if kwargs is None:
    return False
  # Cross-process collectives on the CPU backend need gloo (the default has none).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  where = kwargs.get("coordinator_address", "the cluster's coordinator")
  if kwargs.get("process_id", 0) != 0 and "coordinator_address" in kwargs:
    # jax's client aborts the whole process (no Python exception) when the coordinator
    # never answers; a plain TCP check first turns that into an error naming it.
    _wait_for_coordinator(kwargs["coordinator_address"], timeout_s, kwargs)
  logging.info("Joining the multi-process run at %s (waiting up to %d s for every "
               "process)", where, timeout_s)
  try:
    jax.distributed.initialize(initialization_timeout=timeout_s, **kwargs)
  except Exception as e:  # jax raises several types; say which coordinator failed
    raise DistributedError(
        f"could not join the multi-process run at {where} within {timeout_s} s "
        f"(process {kwargs.get('process_id', '?')} of "
        f"{kwargs.get('num_processes', '?')}): {e}") from e
  logging.info("Joined a %d-process run at %s as process %d", jax.process_count(), where,
               jax.process_index())
  return True


def _wait_for_coordinator(address: str, timeout_s: float, kwargs: dict) -> None:
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() > deadline:
        raise DistributedError(
            f"could not join the multi-process run at {address} within {timeout_s} s "
            f"(process {kwargs['process_id']} of {kwargs['num_processes']}): nothing "
            f"accepts connections there ({e}). Is process 0 running, and is the address "
            "right?") from None
      time.sleep(0.5)
