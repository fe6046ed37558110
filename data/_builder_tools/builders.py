"""Builder pieces the datasets here share: TFDS workarounds, builds that stop cleanly,
the per-frame schema, worker counts and shards written from a pool of worker processes."""

import contextlib
import fcntl
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from typing import Any

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from . import pool

# Feature docs shared by the per-frame schema's builders; each builder overrides some.
_FRAME_DOCS = {
    "image": "RGB square crop around the person (crop_box), S x S.",
    "crop_box": "Square crop [x0, y0, x1, y1], full-image pixels; may extend beyond the "
                "image (zero padded).",
    "camera/f": "Focal lengths, pixels.",
    "camera/c": "Principal point, pixels.",
    "camera/k": "Radial distortion k1..k3.",
    "camera/image_size": "Full image [width, height], pixels.",
}


# Signals that stop a build like Ctrl-C does (a scheduler's or `timeout`'s SIGTERM, a
# closed terminal's SIGHUP), where nobody else handles them.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_LOCK_FILE = ".build.lock"  # In data_dir/<name>/<config>/, beside the version folders.


class BuildStopped(SystemExit):
  """A build stopped by a signal; the process exits with 128 + the signal's number.

  A SystemExit, so that like KeyboardInterrupt it passes `except Exception` and runs
  every `finally` on the way out: TFDS removes its incomplete folder, pools stop.
  """

  def __init__(self, signum: int):
    super().__init__(128 + signum)
    self.signal_name = signal.Signals(signum).name


# The BuildStopped a stop signal raised, kept until its build ends: an exception raised
# where Python only prints it (a __del__ method or weakref callback that the garbage
# collector ran when the signal came) would otherwise let the build run on.
_stop_signalled: list[BuildStopped] = []


def raise_if_stop_signalled() -> None:
  """Raises again the BuildStopped of a stop signal that was swallowed on the way."""
  if _stop_signalled:
    raise _stop_signalled[0]


def until_stopped(items: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
  """Yields `items` (and returns their value), checking before each for a stop signal."""
  while True:
    raise_if_stop_signalled()
    try:
      item = next(items)
    except StopIteration as stop:
      return stop.value
    yield item


@contextlib.contextmanager
def stop_on_signals(what: str,
                    prepared: Callable[[], bool] = lambda: False) -> Iterator[None]:
  """Within: SIGTERM and SIGHUP raise BuildStopped, where they would kill the process.

  Handlers someone else installed stay; off the main thread (where Python cannot set
  handlers) nothing changes. A second signal kills at once, as it would have. If the
  exception is swallowed where the signal landed, the build raises it again at its next
  item (until_stopped) or at the end.

  Args:
    what: the build, for the message, 'h36m_clips/crop368_step5/1.0.0'.
    prepared: whether the dataset is complete (the signal came after the build).
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  replaced = [s for s in _STOP_SIGNALS if signal.getsignal(s) == signal.SIG_DFL]

  def stop(signum, frame):
    del frame
    for s in replaced:
      signal.signal(s, signal.SIG_DFL)
    _stop_signalled.append(BuildStopped(signum))
    raise _stop_signalled[0]

  for s in replaced:
    signal.signal(s, stop)
  try:
    yield
    raise_if_stop_signalled()
  except BuildStopped as e:
    pool.close_all()
    logging.error("%s: build stopped by %s (exit status %d): worker processes stopped, "
                  "%s.", what, e.signal_name, e.code,
                  "the dataset was already complete" if prepared() else
                  "incomplete output removed, no dataset written")
    raise
  finally:
    _stop_signalled.clear()
    for s in replaced:
      if signal.getsignal(s) == stop:
        signal.signal(s, signal.SIG_DFL)


@contextlib.contextmanager
def build_lock(config_dir: str, what: str) -> Iterator[None]:
  """Holds config_dir's build lock: one build of a config at a time.

  The lock is an flock, so the kernel releases it when its holder ends, killed or not.

  Args:
    config_dir: data_dir/<name>/<config>.
    what: the build, for the message.

  Raises:
    RuntimeError: another process builds this config now.
  """
  os.makedirs(config_dir, exist_ok=True)
  fd = os.open(os.path.join(config_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
      raise RuntimeError(f"{what}: another build of this config is running (pid "
                         f"{holder}, lock {config_dir}/{_LOCK_FILE}); wait for it to "
                         "finish or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.


def remove_stale_incomplete(config_dir: str, what: str) -> list[str]:
  """Removes the 'incomplete.*' folders of builds that ended without finishing.

  Call with build_lock held: then no other build is writing into them.

  Returns:
    The folders removed.
  """
  removed = []
  for name in sorted(os.listdir(config_dir)):
    path = os.path.join(config_dir, name)
    if name.startswith(tfds.core.constants.INCOMPLETE_PREFIX) and os.path.isdir(path):
      logging.warning("%s: removing %s, left by a build that did not finish", what, path)
      shutil.rmtree(path)
      removed.append(path)
  return removed


class BuilderMixin:
  """For a `Builder` in data/<name>/: array_record by default, a working code_path and
  builds that stop cleanly.

  List it before the TFDS base class: `class Builder(BuilderMixin,
  tfds.core.GeneratorBasedBuilder)`.
  """

  def __init__(self, *, file_format=None, **kwargs):
    # array_record unless asked otherwise: random access, and unlike tfrecord it
    # needs no TensorFlow to write or read.
    super().__init__(file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD,
                     **kwargs)

  def download_and_prepare(self, *args, **kwargs):
    """TFDS's download_and_prepare, one build per config at a time, with stale
    incomplete folders removed first and SIGTERM/SIGHUP stopping it like Ctrl-C
    (stop_on_signals): workers stopped, the incomplete folder removed."""
    config_dir = os.fspath(self.data_path.parent)
    if self.is_prepared() or "://" in config_dir:  # Remote data_dir: TFDS as is.
      return super().download_and_prepare(*args, **kwargs)
    what = self.info.full_name
    with stop_on_signals(what, self.is_prepared), build_lock(config_dir, what):
      remove_stale_incomplete(config_dir, what)
      return super().download_and_prepare(*args, **kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 looks this up through the `importlib_resources` backport, absent on
    # Python >= 3.9, and fails for any builder inside a package.
    return epath.Path(sys.modules[cls.__module__].__file__)


def tensor(shape: tuple[int, ...], dtype, doc: str | None) -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=shape, dtype=dtype, doc=doc)


def frame_features(image_size: int, num_joints: int,
                   docs: Mapping[str, str]) -> tfds.features.FeaturesDict:
  """The per-frame schema (data/README.md), documented by the dataset.

  Args:
    image_size: S, side of the stored square crops, pixels.
    num_joints: P.
    docs: feature docs by path ('pose_3d', 'camera/p'), over the shared ones in
      _FRAME_DOCS; a feature with neither has no doc.

  Returns:
    The features of one frame.
  """
  docs = {**_FRAME_DOCS, **docs}
  s, p = image_size, num_joints

  def text(name):
    return tfds.features.Text(doc=docs.get(name))

  def vector(name, shape, dtype=np.float32):
    return tensor(shape, dtype, docs.get(name))

  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(s, s, 3), encoding_format="jpeg",
                                   doc=docs.get("image")),
      "pose_3d": vector("pose_3d", (p, 3)),
      "pose_2d": vector("pose_2d", (p, 2)),
      "box": vector("box", (4,)),
      "crop_box": vector("crop_box", (4,)),
      "camera": tfds.features.FeaturesDict({
          "name": text("camera/name"),
          "f": vector("camera/f", (2,)),
          "c": vector("camera/c", (2,)),
          "k": vector("camera/k", (3,)),
          "p": vector("camera/p", (2,)),
          "image_size": vector("camera/image_size", (2,), np.int32),
      }),
      "subject": text("subject"),
      "action": text("action"),
      "sequence_id": text("sequence_id"),
      "frame_index": vector("frame_index", (), np.int32),
  })


def frame_info(builder: tfds.core.DatasetBuilder, num_joints: int,
               docs: Mapping[str, str], **kwargs) -> tfds.core.DatasetInfo:
  """DatasetInfo of a per-frame dataset: frame_features, frames kept in order.

  Args:
    builder: the builder; its config's image_size is S.
    num_joints: P.
    docs: feature docs, as frame_features takes them.
    **kwargs: more of dataset_info_from_configs' arguments (homepage, metadata).
  """
  return builder.dataset_info_from_configs(
      features=frame_features(builder.builder_config.image_size, num_joints, docs),
      supervised_keys=None,
      disable_shuffling=True,  # Frames in sequence order; readers shuffle.
      **kwargs)


def check_clip_config(dataset: str, cfg) -> None:
  """Raises ValueError unless cfg's image_size, frame_step and jpeg_quality are valid."""
  if cfg.image_size < 1 or cfg.frame_step < 1 or not 0 <= cfg.jpeg_quality <= 100:
    raise ValueError(f"{dataset} config {cfg.name!r}: image_size ({cfg.image_size}) and "
                     f"frame_step ({cfg.frame_step}) must be >= 1, jpeg_quality "
                     f"({cfg.jpeg_quality}) in [0, 100]")


def num_workers(env_var: str, configured: int, default: int | None = None) -> int:
  """Worker processes: $env_var if set (0 there: none), else `configured` if not 0.

  Args:
    env_var: name of the environment variable that overrides the config.
    configured: the builder config's number; 0 picks `default`.
    default: None: one per CPU core available to this process.
  """
  if env_var in os.environ:
    return int(os.environ[env_var])
  if configured:
    return configured
  return len(os.sched_getaffinity(0)) if default is None else default


def keyed(prefix: str,
          items: Iterator[tuple[int, Any]]) -> Generator[tuple[str, Any], None, Any]:
  """(index, example) -> ('<prefix>/<index, 6 digits>', example); keeps the
  generator's return value."""
  while True:
    try:
      index, example = next(items)
    except StopIteration as stop:
      return stop.value
    yield f"{prefix}/{index:06d}", example


def pooled_shards(
    fn: Callable[[Any], Iterator[Any]], tasks: Sequence[tuple[str, Any]],
    splits: Collection[str], workers: int,
    read: Callable[[int, Generator[Any, None, Any]], Generator[tuple[str, Any], None, Any]],
    after: Callable[[int, Any, float], None], finish: Callable[[], None],
) -> dict[str, list[Callable[[], Generator[tuple[str, Any], None, None]]]]:
  """Shard generator functions per split, one per task, served by one worker pool.

  TFDS runs them one after the other, split by split; the pool prepares the next
  tasks while TFDS writes the current one, and stops after the last shard or an error.

  Args:
    fn: module-level generator function, fn(task) -> items (pool.OrderedPool).
    tasks: (split, task) in the order TFDS writes them (split by split).
    splits: every split, in order, including any without tasks.
    workers: worker processes; 0: run fn in-process.
    read: read(i, items of task i) yields the shard's (key, example) and returns a
      result.
    after: after(i, result, seconds since the pool was made), when shard i is written.
    finish: called once all shards are written, the workers stopped.

  Returns:
    {split: [shard generator function]} for tfds.core.ShardBasedBuilder.
  """
  runner = pool.OrderedPool(fn, [task for _, task in tasks], workers)
  start = time.monotonic()

  def shard(index):
    try:
      result = yield from read(index, until_stopped(runner.results(index)))
    except BaseException:
      runner.close()
      raise
    after(index, result, time.monotonic() - start)
    if index == len(tasks) - 1:
      runner.close()
      finish()

  shards = {split: [] for split in splits}
  for index, (split, _) in enumerate(tasks):
    shards[split].append(lambda index=index: shard(index))
  return shards


def sequence_shards(
    fn: Callable[[Any], Iterator[tuple[int, Any]]], sequences: Mapping[str, Sequence[Any]],
    options: Any, workers: int, log: Callable[[int, int, Any, Any, float], None],
    summarize: Callable[[str, list[Any]], None],
) -> dict[str, list[Callable[[], Generator[tuple[str, Any], None, None]]]]:
  """pooled_shards with one shard per sequence, keyed '<sequence_id>/<frame index>'.

  Args:
    fn: module-level generator function; fn((sequence, options)) yields (frame index,
      example) and returns the sequence's report.
    sequences: per split, objects with a `sequence_id`.
    options: passed to fn with each sequence.
    workers: worker processes; 0: run fn in-process.
    log: log(i, number of sequences, sequence, report, seconds so far) after each.
    summarize: summarize(split, reports of its sequences), per split after the last.

  Returns:
    {split: [shard generator function]}.
  """
  order = [(split, seq) for split, seqs in sequences.items() for seq in seqs]
  reports = {split: [] for split in sequences}

  def after(index, report, elapsed):
    split, sequence = order[index]
    reports[split].append(report)
    log(index, len(order), sequence, report, elapsed)

  def finish():
    for split, split_reports in reports.items():  # Last in the build log.
      summarize(split, split_reports)

  return pooled_shards(fn, [(split, (seq, options)) for split, seq in order], sequences,
                       workers, lambda i, items: keyed(order[i][1].sequence_id, items),
                       after, finish)
