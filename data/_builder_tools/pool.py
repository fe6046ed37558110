"""Runs a generator function over tasks in worker processes, read back in task order.

A builder writes one shard per task (a sequence, a run of persons), in order, while
workers prepare the next ones. Workers stream items back in chunks; the parent holds
only the chunks of tasks it has not reached yet, and hands out at most `window` tasks
ahead of the one being read, so memory stays bounded (about `window` tasks).

Workers end with the parent however it ends: `close()` stops them on any exception
(Ctrl-C, and SIGTERM, which builders.BuilderMixin turns into one), and a parent killed
outright (SIGKILL, out of memory) takes them along through a parent-death signal and a
watchdog on the pipe from the parent (`_die_with_parent`). Once they are gone the
multiprocessing resource tracker, which they share with the parent, sees end-of-file
and ends too, after unlinking the queues' semaphores.
"""

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import pickle
import queue
import signal
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

_CHUNK = 32  # Items per message.
_POLL_S = 5.0  # How often a waiting parent checks that its workers are alive.
_JOIN_S = 5.0  # How long close() waits for a terminated worker before SIGKILL.
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Whether workers ask Linux for SIGKILL when their parent ends (tests turn it off to
# check the watchdog alone).
USE_PDEATHSIG = True
_LIVE_POOLS = weakref.WeakSet()  # Pools with started workers, for close_all().


class WorkerError(RuntimeError):
  """A worker process died, or raised an exception that could not be sent back."""


def _run_task(fn, task_index, task, results, chunk_size) -> bool:
  """Streams one task's items to `results`; False if it failed (error sent)."""
  try:
    generator = fn(task)
    chunk = []
    while True:
      try:
        chunk.append(next(generator))
      except StopIteration as stop:
        if chunk:
          results.put(("items", task_index, chunk))
        results.put(("done", task_index, stop.value))
        return True
      if len(chunk) >= chunk_size:
        results.put(("items", task_index, chunk))
        chunk = []
  except BaseException as e:  # pylint: disable=broad-except
    remote = traceback.format_exc()
    try:
      pickle.dumps(e)  # Queue.put pickles in a thread where failures would be lost.
    except Exception:  # pylint: disable=broad-except
      e = WorkerError(f"{type(e).__name__}: {e}")
    results.put(("error", task_index, (e, remote)))
    return False


def _die_with_parent(pdeathsig: bool) -> None:
  """Makes this worker end when its parent process ends, however the parent ends.

  A parent killed with SIGKILL runs no clean-up, and an idle worker blocked in
  tasks.get() would wait forever. Linux sends the worker SIGKILL when the thread that
  started it ends (PR_SET_PDEATHSIG; asked only when that is the parent's main thread,
  which lives as long as the process). On any platform, a watchdog thread waits on
  the pipe that multiprocessing keeps open from the parent and exits at end-of-file.

  Args:
    pdeathsig: ask for the parent-death signal.
  """
  # Ctrl-C reaches the whole process group; the parent stops the workers itself.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  if pdeathsig and sys.platform.startswith("linux"):
    try:
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # No prctl here: the watchdog still works.
      pass
  parent = multiprocessing.parent_process()
  if parent is None:
    return
  sentinel = parent.sentinel  # Also catches a parent that died before prctl.

  def watch():
    multiprocessing.connection.wait([sentinel])
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="parent_watchdog", daemon=True).start()


def _worker(fn, tasks, results, chunk_size, pdeathsig=False):
  _die_with_parent(pdeathsig)
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)  # Parallel over processes already.
  while (item := tasks.get()) is not None:
    if not _run_task(fn, *item, results, chunk_size):
      return


@contextlib.contextmanager
def importable(*fns):
  """Puts the root of each of `fns`' modules on sys.path while workers start.

  `tfds build` imports a builder with its folder's parent on sys.path only during the
  import; spawned workers copy sys.path and import each function's module by its name.
  """
  added = []
  for fn in fns:
    path = pathlib.Path(sys.modules[fn.__module__].__file__).resolve()
    root = str(path.parents[fn.__module__.count(".")])
    if root not in sys.path:
      sys.path.insert(0, root)
      added.append(root)
  try:
    yield
  finally:
    for root in added:
      sys.path.remove(root)


# Signals whose Python handlers may raise in the parent (builders.stop_on_signals, Ctrl-C).
_HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
  """Delivers SIGTERM / SIGINT / SIGHUP after the block rather than inside it.

  A Python signal handler that raises inside `multiprocessing.Queue.put` can land
  between the acquisition of the queue's lock and the `with` that releases it
  (`threading.Condition.__enter__` is Python code), leaving the lock held; `close()`
  then blocks on it forever. Handlers run only in the main thread, so elsewhere this
  does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received = []
  previous = {}
  for signum in _HELD_SIGNALS:
    if callable(signal.getsignal(signum)):
      previous[signum] = signal.signal(signum, lambda n, _: received.append(n))
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    for signum in dict.fromkeys(received):
      signal.raise_signal(signum)  # The original handler runs (and raises) here.


class OrderedPool:
  """fn(task) for every task, in worker processes; read with `results(i)`, i = 0, 1, ...

  Use as a context manager (or call close()) so that workers always stop.
  """

  def __init__(self, fn: Callable[[Any], Iterator[Any]], tasks: Sequence[Any],
               num_workers: int, window: int | None = None,
               chunk_size: int = _CHUNK):
    """Creates the pool; workers start at the first `results` call.

    Args:
      fn: module-level generator function (spawned workers import it by name);
        `results` returns its return value.
      tasks: picklable arguments of fn.
      num_workers: worker processes; 0 runs fn here, when its results are read.
      window: tasks handed out ahead of the one being read (default workers + 2).
      chunk_size: items per message between processes.
    """
    self._fn = fn
    self._tasks = list(tasks)
    self._num_workers = min(num_workers, len(self._tasks))
    self._window = window or self._num_workers + 2
    self._chunk_size = chunk_size
    self._next_read = 0
    self._next_dispatch = 0
    self._buffers: dict[int, list[Any]] = {}  # Task -> chunks read ahead.
    self._done: dict[int, Any] = {}  # Task -> fn's return value.
    self._workers = []
    self._task_queue = self._results = None
    self._started = False

  def __enter__(self) -> "OrderedPool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _start(self) -> None:
    # spawn, not fork: the parent runs TFDS and OpenCV threads that fork would copy
    # in an undefined state.
    context = multiprocessing.get_context("spawn")
    self._task_queue = context.Queue()
    self._results = context.Queue(maxsize=2 * self._num_workers)
    # 'h36m_clips_worker_0' for fn = [data.]h36m_clips.examples.task_examples.
    prefix = self._fn.__module__.split(".")[-2:][0]
    # The parent-death signal follows the starting thread: only the main thread
    # outlives the pool for sure.
    pdeathsig = USE_PDEATHSIG and threading.current_thread() is threading.main_thread()
    self._workers = [
        context.Process(target=_worker, daemon=True, name=f"{prefix}_worker_{i}",
                        args=(self._fn, self._task_queue, self._results,
                              self._chunk_size, pdeathsig))
        for i in range(self._num_workers)
    ]
    _LIVE_POOLS.add(self)
    with importable(self._fn, _worker):
      for worker in self._workers:
        worker.start()

  def _dispatch(self) -> None:
    limit = min(self._next_read + self._window, len(self._tasks))
    with _signals_held():  # put() is quick: the queue is unbounded
      while self._next_dispatch < limit:
        self._task_queue.put((self._next_dispatch, self._tasks[self._next_dispatch]))
        self._next_dispatch += 1
      if self._next_dispatch == len(self._tasks):
        for _ in self._workers:
          self._task_queue.put(None)
        self._next_dispatch += 1  # Stop sentinels sent once.

  def _receive(self) -> None:
    """Files one message from the workers under its task; raises task errors."""
    while True:
      try:
        kind, task_index, payload = self._results.get(timeout=_POLL_S)
        break
      except queue.Empty:
        dead = [w for w in self._workers if w.exitcode not in (None, 0)]
        if dead:
          raise WorkerError(f"worker {dead[0].name} died with exit code "
                            f"{dead[0].exitcode} (out of memory?)") from None
    if kind == "items":
      self._buffers.setdefault(task_index, []).append(payload)
    elif kind == "done":
      self._done[task_index] = payload
    else:
      error, remote = payload
      raise error from WorkerError(f"in a worker, task {task_index}:\n{remote}")

  def results(self, task_index: int) -> Generator[Any, None, Any]:
    """Yields fn(tasks[task_index])'s items and returns its return value.

    Must be called for tasks 0, 1, 2, ... in order, each read to the end.
    """
    if task_index != self._next_read:
      raise ValueError(f"read task {self._next_read} next, not {task_index}")
    if not self._num_workers:
      value = yield from self._fn(self._tasks[task_index])
      self._next_read += 1
      return value
    if not self._started:
      self._start()
      self._started = True
    self._dispatch()
    while True:
      for chunk in self._buffers.pop(task_index, ()):
        yield from chunk
      if task_index in self._done:
        break
      self._receive()
    self._next_read += 1
    return self._done.pop(task_index)

  def __del__(self):
    self.close()

  def close(self) -> None:
    """Stops the workers (at once, if tasks remain)."""
    _LIVE_POOLS.discard(self)
    started = [w for w in self._workers if w.pid is not None]  # An interrupted _start.
    for worker in started:
      if worker.is_alive():
        worker.terminate()
    for worker in started:
      worker.join(_JOIN_S)
      if worker.exitcode is None:  # Stuck in uninterruptible I/O, or SIGTERM ignored.
        worker.kill()
        worker.join()
    for q in (self._task_queue, self._results):
      if q is not None:
        q.cancel_join_thread()
        q.close()
    self._workers = []
    self._task_queue = self._results = None


def close_all() -> None:
  """Stops the workers of every open pool (a build being stopped by a signal)."""
  for runner in list(_LIVE_POOLS):
    runner.close()
