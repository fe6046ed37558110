"""One run per workdir: an exclusive lock on <workdir>/.lock held by process 0 of a run.

Two runs on one workdir delete each other's in-flight checkpoints (issue 18), so a second
run stops at once, naming the holder (pid and host recorded in the file). The lock is an
`fcntl.flock` on the open file, which the kernel drops when its process dies: the lock of a
killed run is free and simply taken over (the file's old pid/host are logged). On a
filesystem without flock the file's pid is checked instead (same host only).

Every process of a multi-process run takes the same decision: process 0 locks and
broadcasts whether it could.
"""

import errno
import fcntl
import json
import os
import socket
import time
from typing import Optional
import weakref

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

LOCK = ".lock"
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
# Locks this process holds, by path: a run started again in the same process while an
# earlier run's lock is still referenced (e.g. by a traceback) reuses it instead of
# blocking on itself. Weak: dropping the run's reference releases the lock.
_held: "weakref.WeakValueDictionary[str, RunLock]" = weakref.WeakValueDictionary()


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir (the message names its pid and host)."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


class RunLock:
  """The held lock; released by `release()` or when the object (or process) goes away."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK)
    self._fd: Optional[int] = None

  def _busy(self, holder: dict) -> WorkdirBusyError:
    return WorkdirBusyError(
        f"{os.path.dirname(self.path)} is in use by another run (pid {holder.get('pid', '?')}"
        f" on host {holder.get('host', '?')}, started {holder.get('started', '?')}; lock "
        f"{self.path}). Wait for it to finish, stop it, or use another --workdir")

  def acquire(self) -> "RunLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    previous = _read(self.path)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise self._busy(previous) from None
    except OSError as e:
      if e.errno not in _NO_FLOCK:
        os.close(fd)
        raise
      # No flock here (some network filesystems): trust a live pid on this host.
      if (previous.get("host") == socket.gethostname() and previous.get("pid")
          and previous["pid"] != os.getpid() and _alive(int(previous["pid"]))):
        os.close(fd)
        raise self._busy(previous) from None
    if previous.get("pid") and previous.get("pid") != os.getpid():
      logging.info("Taking over %s from pid %s on %s (no longer running)", self.path,
                   previous.get("pid"), previous.get("host"))
    me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, me.encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      try:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
      finally:
        os.close(self._fd)
        self._fd = None

  def __del__(self):
    self.release()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()
    return False


def acquire(workdir: str) -> Optional[RunLock]:
  """Locks `workdir` for this run (process 0); every process raises WorkdirBusyError when
  another run holds it. Returns the lock (None on other processes): keep a reference for
  as long as the run lasts."""
  lock, error = None, None
  if jax.process_index() == 0:
    path = os.path.join(os.path.abspath(workdir), LOCK)
    lock = _held.get(path)
    if lock is None:
      try:
        lock = RunLock(workdir).acquire()
        _held[path] = lock
      except WorkdirBusyError as e:
        error = e
  if jax.process_count() > 1:
    busy = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if int(busy) and error is None:
      error = WorkdirBusyError(f"{workdir} is in use by another run (process 0 could not "
                               f"lock {os.path.join(workdir, LOCK)})")
  if error is not None:
    raise error
  return lock
