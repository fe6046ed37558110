"""Helpers for the builders' tests.

Light to import (TensorFlow Datasets only when a build runs): the children of
run_and_signal and their spawned workers import this module.
"""

import dataclasses
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import pool

# Set in a child's environment, inherited by everything it starts (spawned workers,
# the resource tracker): how a test finds the processes a killed build left behind.
MARKER_ENV = "DATA_BUILD_TEST_MARKER"
_REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
_PROGRESS = "shards_read"  # In the work dir: a line per shard the child has read.


def prepare(builder, manual_dir,
            unset_env: str | None = None) -> None:
  """Builds from `manual_dir` (None: the builder needs none), with $unset_env (if
  given) unset meanwhile.

  Unsetting a builder's worker variable makes the build use the config's num_workers.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  old = os.environ.pop(unset_env, None) if unset_env else None
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else str(manual_dir)))
  finally:
    if old is not None:
      os.environ[unset_env] = old


def marked_processes(marker: str) -> dict[int, str]:
  """Live processes (zombies excluded) whose environment holds MARKER_ENV=marker.

  Returns:
    pid -> command line.
  """
  needle = f"{MARKER_ENV}={marker}".encode()
  found = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/environ", "rb") as f:
        environ = f.read().split(b"\0")
      with open(f"/proc/{entry}/stat") as f:
        state = f.read().rpartition(")")[2].split()[0]
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:  # Gone meanwhile, or not ours.
      continue
    if needle in environ and state not in ("Z", "X"):
      found[int(entry)] = cmdline
  return found


def _paced(items: Iterator[Any], delay: float):
  """Yields items with a pause before each; returns the generator's value."""
  while True:
    try:
      item = next(items)
    except StopIteration as stop:
      return stop.value
    time.sleep(delay)
    yield item


def paced_build(factory: Callable[..., Any], data_dir: str, manual_dir,
                work_dir: str, delay: float) -> None:
  """Builds factory(data_dir=data_dir), reading each worker item `delay` s late.

  factory: picklable and light to import in a fresh interpreter, e.g.
  functools.partial(Builder, config=<config>) rather than a function in a test module.

  Slow reading keeps the build going long enough to be killed at a chosen moment,
  with workers blocked on a full results queue or idle in tasks.get(). A line per
  shard read goes to <work_dir>/shards_read.
  """
  results = pool.OrderedPool.results
  progress = open(os.path.join(work_dir, _PROGRESS), "a", buffering=1)  # pylint: disable=consider-using-with

  def paced_results(self, task_index):
    value = yield from _paced(results(self, task_index), delay)
    progress.write(f"{task_index}\n")
    return value

  pool.OrderedPool.results = paced_results
  prepare(factory(data_dir=data_dir), manual_dir)


def shards_read(work_dir) -> int:
  """Shards a paced_build child has read so far."""
  try:
    return len(pathlib.Path(work_dir, _PROGRESS).read_text().splitlines())
  except FileNotFoundError:
    return 0


def _child_main() -> None:
  """Entry point of run_and_signal's child: runs the pickled job."""
  job = pickle.loads(pathlib.Path(sys.argv[1]).read_bytes())
  pool.USE_PDEATHSIG = job["pdeathsig"]
  job["main"](*job["args"])


@dataclasses.dataclass
class Outcome:
  """What a child process left when it was signalled.

  Attributes:
    returncode: the child's exit status (-N: killed by signal N).
    stderr: its standard error.
    shards_read: shards it had read when the signal was sent.
    survivors: pid -> command line of its processes still alive (then killed).
  """
  returncode: int
  stderr: str
  shards_read: int
  survivors: dict[int, str]


def run_and_signal(main: Callable[..., None], args: tuple, work_dir: pathlib.Path,
                   signum: int, ready: Callable[[int, str], bool],
                   env: dict[str, str] | None = None, pdeathsig: bool = True,
                   timeout: float = 60.0, grace: float = 10.0) -> Outcome:
  """Runs main(*args) in a fresh interpreter and sends it `signum` once ready.

  Args:
    main: a module-level function (the child imports it by name).
    args: its picklable arguments.
    work_dir: an empty folder, unique to the test: it names the processes.
    signum: the signal to send.
    ready: ready(child pid, marker) -> True when the signal is due; polled.
    env: environment variables for the child, over this process's.
    pdeathsig: pool.USE_PDEATHSIG in the child.
    timeout: the child must be ready within it, and end within it after the signal.
    grace: how long the child's processes may take to end after it did.

  Returns:
    What was left. Fails if the child ended before it was ready.
  """
  marker = str(work_dir)
  job = work_dir / "job.pkl"
  job.write_bytes(pickle.dumps(dict(main=main, args=args, pdeathsig=pdeathsig)))
  stderr_path = work_dir / "stderr.txt"
  code = "from data._builder_tools import testing; testing._child_main()"
  with open(stderr_path, "w") as stderr:
    child = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", code, str(job)], cwd=_REPOSITORY, stderr=stderr,
        stdout=subprocess.DEVNULL, env={**os.environ, **(env or {}), MARKER_ENV: marker,
                                        "PYTHONFAULTHANDLER": "1"})
  try:
    deadline = time.monotonic() + timeout
    while not ready(child.pid, marker):
      if child.poll() is not None or time.monotonic() > deadline:
        raise AssertionError(f"the child ended (status {child.returncode}) or timed "
                             f"out before it was ready:\n{stderr_path.read_text()}")
      time.sleep(0.02)
    read = shards_read(work_dir)
    child.send_signal(signum)
    try:
      child.wait(timeout)
    except subprocess.TimeoutExpired:
      # Faulthandler (on in the child) prints every thread's Python stack on SIGABRT.
      child.send_signal(signal.SIGABRT)
      try:
        child.wait(grace)
      except subprocess.TimeoutExpired:
        pass
      raise AssertionError(
          f"the child did not end within {timeout} s of {signal.Signals(signum).name}; "
          f"its processes: {marked_processes(marker)}; its stderr, stacks at the end:\n"
          f"{stderr_path.read_text()[-20000:]}") from None
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
    survivors = _kill_marked(marker, grace)
  return Outcome(child.returncode, stderr_path.read_text(), read, survivors)


def _kill_marked(marker: str, grace: float) -> dict[int, str]:
  """Waits up to `grace` s for the marked processes to end, then kills the rest.

  Returns:
    pid -> command line of those still alive after `grace` (the survivors).
  """
  deadline = time.monotonic() + grace
  while (survivors := marked_processes(marker)) and time.monotonic() < deadline:
    time.sleep(0.05)
  for pid in survivors:  # Leave nothing running, whatever the test says.
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  return survivors


def workers_started(child_pid: int, marker: str) -> bool:
  """run_and_signal's `ready` at start-up: a spawned worker of the child exists."""
  return any("spawn_main" in cmdline for pid, cmdline in marked_processes(marker).items()
             if pid != child_pid)


def first_shard_read(work_dir) -> Callable[[int, str], bool]:
  """run_and_signal's `ready` mid-build: the paced_build child has read a shard."""
  return lambda child_pid, marker: shards_read(work_dir) >= 1


def slow_items(task):
  """A pool task that never ends: `task` every 50 ms."""
  while True:
    yield task
    time.sleep(0.05)


def hold_pool(work_dir: pathlib.Path, stoppable: bool = False) -> None:
  """Reads task 0 of a 2-worker pool forever: one worker busy, one idle in get().

  Marks a shard read once the first item arrived. stoppable: inside
  builders.stop_on_signals, as a build is.
  """
  def read():
    with pool.OrderedPool(slow_items, [0, 1, 2], num_workers=2, window=1) as runner:
      for _ in runner.results(0):
        (work_dir / _PROGRESS).write_text("0\n")

  if not stoppable:
    read()
    return
  from . import builders  # pylint: disable=g-import-not-at-top
  with builders.stop_on_signals("hold_pool"):
    read()
