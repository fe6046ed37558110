"""The clip input pipeline: TFDS frames -> clips of C frames -> augmented, batched arrays.

One function, `create_pipeline(config, workdir)`, builds everything from the config. The
pipeline knows nothing about the model. Every batch is a pure function of (seed, step), so a
resumed run sees exactly the batches it would have seen, whatever the worker count.

Batches are dicts of numpy arrays (B clips, T = clip_length frames, P joints):
  image       (B, T, H, W, 3) uint8, H = W = config.model.input_size. Kept uint8 to cut
              host-to-device traffic 4x; `model_input` turns it into the model's input on
              the device.
  pose_3d     (B, T, P, 3) float32 root-relative targets, max-min normalised to [0, 1] with
              the training split's per-coordinate statistics.
  pose_3d_mm  (B, T, P, 3) float32 root-relative camera-frame joints, mm.
  pose_2d     (B, T, P, 2) float32 joints in pixels of `image` (edge convention: the image
              spans [0, W] x [0, H]).
  mask        (B, T) bool, False for padding (evaluation clips at sequence ends, last batch).
  record      (B, T) int64 record index in the split (-1 for padding).
"""

import concurrent.futures
import dataclasses
import os
import queue
import threading
from typing import Any, Iterator, Optional, Sequence

from absl import logging
import cv2
import numpy as np
import tensorflow_datasets as tfds

from rpsm_jax import joints
from rpsm_jax import poses
from rpsm_jax import workdir as workdir_lib
from rpsm_jax.pipeline import datasets

_INDEX_VERSION = 1
_META_KEYS = ("sequence_id", "frame_index", "subject", "action")


# --------------------------------------------------------------------------- split index


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """Per-record metadata of one split, in record order (images are not read).

  sequence (N,) int32 into `sequence_names`; frame_index (N,) int32; subject (N,) int32 into
  `subject_names`; action (N,) int32 into `action_names`; pose_3d (N, P, 3) float32 mm.
  """
  sequence: np.ndarray
  frame_index: np.ndarray
  subject: np.ndarray
  action: np.ndarray
  pose_3d: np.ndarray
  sequence_names: tuple[str, ...]
  subject_names: tuple[str, ...]
  action_names: tuple[str, ...]

  @property
  def num_joints(self) -> int:
    return self.pose_3d.shape[1]

  def save(self, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
      np.savez(f, version=_INDEX_VERSION, **{
          k: np.asarray(v) for k, v in dataclasses.asdict(self).items()})
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written index

  @classmethod
  def load(cls, path: str) -> Optional["SplitIndex"]:
    with np.load(path) as z:
      if int(z["version"]) != _INDEX_VERSION:
        return None
      fields = {f.name: z[f.name] for f in dataclasses.fields(cls)}
    for k in ("sequence_names", "subject_names", "action_names"):
      fields[k] = tuple(str(s) for s in fields[k])
    return cls(**fields)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


CORRUPT_POLICIES = ("stop", "skip")
_CORRUPT_SEQUENCE = "<corrupt record>"   # make_clips never cuts clips from these


def record_files(builder, split: str) -> list[tuple[str, int]]:
  """(file, records) of each shard of `split`, in record order (to name a record's file)."""
  try:
    info = builder.info.splits[split]
    return list(zip((os.fspath(f) for f in info.filepaths), info.shard_lengths))
  except Exception:  # pylint: disable=broad-except  # naming files is best effort
    return []


def record_file(files: list[tuple[str, int]], record: int) -> str:
  """The shard file holding `record` ('?' when unknown)."""
  end = 0
  for name, length in files:
    end += length
    if record < end:
      return name
  return "?"


def _check_policy(policy: str) -> None:
  if policy not in CORRUPT_POLICIES:
    raise ValueError(f"config.dataset.corrupt_records must be one of {CORRUPT_POLICIES}, "
                     f"got {policy!r}")


def read_index(builder, split: str, chunk: int = 512,
               corrupt_records: str = "stop") -> SplitIndex:
  """Reads the metadata of every record of `split`, cached next to the prepared dataset.

  A record that cannot be read stops with an error naming the dataset, split, record and
  file; with corrupt_records="skip" it is counted, logged and kept out of every clip.
  """
  _check_policy(corrupt_records)
  cache = os.path.join(os.fspath(builder.data_path), f"rpsm_index_{split}.npz")
  if os.path.exists(cache):
    index = SplitIndex.load(cache)
    if index is not None:
      return index
  source = builder.as_data_source(split=split,
                                  decoders={"image": tfds.decode.SkipDecoding()})
  n = len(source)
  if n == 0:
    raise ValueError(f"split {split!r} of {builder.info.full_name} is empty")
  files = record_files(builder, split)
  meta = {k: [] for k in _META_KEYS}
  poses = []
  corrupt = []

  def read_one(r):
    try:
      return source[r]
    except Exception as e:  # pylint: disable=broad-except
      where = (f"{builder.info.full_name} split {split!r}, record {r} (file "
               f"{record_file(files, r)})")
      if corrupt_records == "stop":
        raise RuntimeError(f"could not read {where}: {type(e).__name__}: {e}. Rebuild the "
                           "dataset, or set --config.dataset.corrupt_records=skip to skip "
                           "such records") from e
      logging.warning("Skipping unreadable %s: %s", where, e)
      corrupt.append(r)
      return None

  for start in range(0, n, chunk):
    ids = list(range(start, min(n, start + chunk)))
    try:
      examples = source.__getitems__(ids)
    except Exception:  # pylint: disable=broad-except  # find the bad record(s) one by one
      examples = [read_one(r) for r in ids]
    for ex in examples:
      if ex is None:   # a skipped record: a placeholder no clip uses
        for k in _META_KEYS:
          meta[k].append(_CORRUPT_SEQUENCE if k == "sequence_id" else
                         (-1 if k == "frame_index" else ""))
        poses.append(poses[-1] if poses else None)
        continue
      for k in _META_KEYS:
        meta[k].append(ex[k])
      poses.append(ex["pose_3d"])
  if corrupt:
    logging.warning("%s split %r: skipped %d unreadable record(s): %s",
                    builder.info.full_name, split, len(corrupt), corrupt[:20])
    if len(corrupt) == n:
      raise RuntimeError(f"no record of {builder.info.full_name} split {split!r} is "
                         "readable")
    # A placeholder's pose repeats a readable neighbour's: statistics stay finite.
    first = next(p for p in poses if p is not None)
    poses = [first if p is None else p for p in poses]
  pose_3d = np.stack(poses).astype(np.float32)
  if not np.all(np.isfinite(pose_3d)):
    bad = np.unique(np.nonzero(~np.isfinite(pose_3d))[0])[:5]
    raise ValueError(f"{builder.info.full_name} split {split!r}: non-finite pose_3d in "
                     f"records {bad.tolist()}")

  def encode(values):
    names, ids = np.unique([_text(v) for v in values], return_inverse=True)
    return ids.astype(np.int32), tuple(names.tolist())

  sequence, sequence_names = encode(meta["sequence_id"])
  subject, subject_names = encode(meta["subject"])
  action, action_names = encode(meta["action"])
  index = SplitIndex(sequence, np.asarray(meta["frame_index"], np.int32), subject, action,
                     pose_3d, sequence_names, subject_names, action_names)
  if corrupt:
    return index   # not cached: every run reports (and, under "stop", stops on) them
  try:
    index.save(cache)
  except OSError as e:  # a read-only dataset directory only costs a re-read next time
    logging.warning("Could not cache the clip index at %s: %s", cache, e)
  return index


# --------------------------------------------------------------------------- clips


def make_clips(index: SplitIndex, clip_length: int, frame_step: int = 1, stride: int = 1,
               cover_all: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Cuts clips of `clip_length` frames, `frame_step` stored frames apart, within sequences.

  Training (cover_all=False): a clip starts every `stride` frames wherever a whole clip fits.
  Evaluation (cover_all=True): non-overlapping clips covering every frame once; for each of
  the `frame_step` interleaved sub-sequences, consecutive chunks of `clip_length`, the last
  one padded by repeating its final frame and masked.

  Returns (clips (N, C) int64 record ids, mask (N, C) bool).
  """
  if clip_length < 1 or frame_step < 1 or stride < 1:
    raise ValueError(f"clip_length ({clip_length}), frame_step ({frame_step}) and "
                     f"clip_stride ({stride}) must be >= 1")
  order = np.lexsort((index.frame_index, index.sequence))
  bounds = np.flatnonzero(np.diff(index.sequence[order])) + 1
  clips, masks = [], []
  span = (clip_length - 1) * frame_step + 1
  corrupt = (index.sequence_names.index(_CORRUPT_SEQUENCE)
             if _CORRUPT_SEQUENCE in index.sequence_names else -1)
  for records in np.split(order, bounds):
    if index.sequence[records[0]] == corrupt:
      continue   # records read_index skipped (corrupt_records="skip")
    if cover_all:
      for r in range(min(frame_step, len(records))):
        sub = records[r::frame_step]
        for s in range(0, len(sub), clip_length):
          chunk = sub[s:s + clip_length]
          pad = clip_length - len(chunk)
          clips.append(np.concatenate([chunk, np.repeat(chunk[-1:], pad)]))
          masks.append(np.arange(clip_length) < len(chunk))
    else:
      for s in range(0, len(records) - span + 1, stride):
        clips.append(records[s:s + span:frame_step])
        masks.append(np.ones(clip_length, bool))
  if not clips:
    longest = int(np.bincount(index.sequence).max())
    raise ValueError(f"no clip of clip_length={clip_length} x frame_step={frame_step} fits "
                     f"in any sequence (the longest has {longest} frames)")
  return np.stack(clips).astype(np.int64), np.stack(masks)


# --------------------------------------------------------------------------- augmentation


def scale_and_crop(image: np.ndarray, joints_2d: np.ndarray, out_size: int, scale: float,
                   shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
  """Resizes a square crop to round(out_size * scale), then crops or zero-pads to out_size.

  Args:
    image: (S, S, 3) uint8 stored crop.
    joints_2d: (P, 2) pixels in `image` (edge convention).
    out_size: model input size.
    scale: 1 = plain resize to out_size; the authors draw it in [0.9, 1.1] per frame.
    shift: (x, y) in [0, 1]: where the window falls within the possible positions
      (0.5 = centred). Larger images are cropped, smaller ones zero-padded.

  Returns:
    (out_size, out_size, 3) uint8 image and (P, 2) joints in its pixels.
  """
  size = image.shape[0]
  n = max(1, int(round(out_size * scale)))
  if n != size:
    interp = cv2.INTER_CUBIC if n > size else cv2.INTER_AREA
    image = cv2.resize(image, (n, n), interpolation=interp)
  # Offset of the resized image's top-left corner on the output canvas.
  ox, oy = (int(round((out_size - n) * s)) for s in shift)
  out = np.zeros((out_size, out_size, 3), np.uint8)
  x0, y0 = max(ox, 0), max(oy, 0)
  x1, y1 = min(ox + n, out_size), min(oy + n, out_size)
  out[y0:y1, x0:x1] = image[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
  joints = joints_2d * (n / size) + np.array([ox, oy], np.float32)
  return out, joints.astype(np.float32)


# --------------------------------------------------------------------------- loader


def epoch_shuffle(seed: int, positions: np.ndarray, n: int) -> np.ndarray:
  """Item ids at global stream `positions` when each epoch of n items is a fresh
  permutation seeded by (seed, epoch): a pure function, so any step can be rebuilt."""
  epochs, offsets = positions // n, positions % n
  perms = {e: np.random.default_rng([seed, int(e)]).permutation(n)
           for e in np.unique(epochs)}
  return np.array([perms[e][o] for e, o in zip(epochs, offsets)])


class ClipLoader:
  """Assembles batches of clips; batch `step` depends only on (seed, step).

  Training (`shuffle`): an endless stream; clips are drawn from a fresh permutation each
  epoch. Evaluation: one pass over every clip in order, the last batch padded and masked.
  """

  def __init__(self, source, index: SplitIndex, clips: np.ndarray, clip_mask: np.ndarray,
               norm: poses.Normalization, *, input_size: int, batch_size: int, seed: int,
               shuffle: bool, augment: Optional[Any] = None, num_workers: int = 2,
               shard: tuple[int, int] = (0, 1), name: str = "",
               corrupt_records: str = "stop", files: Sequence[tuple[str, int]] = ()):
    self.source, self.index, self.norm = source, index, norm
    self.name = name or "clip loader"
    _check_policy(corrupt_records)
    # "skip": an unreadable frame is replaced by the nearest readable frame of its
    # sequence (its 3D target stays the index's); the records are counted here.
    self.corrupt_records, self.files = corrupt_records, list(files)
    self.skipped: set[int] = set()
    self._skipped_lock = threading.Lock()
    self.clips, self.clip_mask = clips, clip_mask
    self.input_size, self.batch_size = input_size, batch_size
    self.seed, self.shuffle = seed, shuffle
    self.shard_index, self.shard_count = shard
    if batch_size % self.shard_count:
      raise ValueError(f"batch of {batch_size} clips does not split over "
                       f"{self.shard_count} hosts")
    self.augment = augment if augment is not None and augment.enabled else None
    self._pool = concurrent.futures.ThreadPoolExecutor(max(1, num_workers))

  def close(self) -> None:
    """Stops the worker threads (after the batches in flight); no batch can follow."""
    self._pool.shutdown()

  @property
  def num_clips(self) -> int:
    return len(self.clips)

  @property
  def num_batches(self) -> int:
    """Batches in one pass (evaluation); the last may be padded."""
    return -(-self.num_clips // self.batch_size)

  def _rows(self) -> np.ndarray:
    """This host's rows of every global batch (a contiguous share, in host order)."""
    local = self.batch_size // self.shard_count
    return np.arange(self.shard_index * local, (self.shard_index + 1) * local)

  def _clip_ids(self, step: int) -> np.ndarray:
    """Clip ids of this host's slice of global batch `step` (-1 = padding)."""
    b, n = self.batch_size, self.num_clips
    positions = step * b + self._rows()
    if not self.shuffle:
      return np.where(positions < n, positions, -1)
    return epoch_shuffle(self.seed, positions, n)

  def _augmentations(self, step: int, t: int) -> list[Optional[tuple]]:
    """(scale, shift) per frame of this host's clips, or None (no augmentation).

    Each clip draws from its own generator seeded by (seed, step, row in the global
    batch), so a batch is the same whatever the number of hosts and devices.
    """
    rows = self._rows()
    if self.augment is None:
      return [None] * (len(rows) * t)
    augs = []
    for row in rows:
      augs += self._draw(np.random.default_rng([self.seed, step, 1, int(row)]), t)
    return augs

  def _draw(self, rng: np.random.Generator, t: int) -> list[Optional[tuple]]:
    """t (scale, shift) draws from config.augment, all None with 1 - per_clip_probability."""
    scales = rng.uniform(self.augment.scale_min, self.augment.scale_max, t)
    shifts = rng.uniform(0.0, 1.0, (t, 2))
    on = rng.uniform() < self.augment.per_clip_probability
    return [(scales[j], tuple(shifts[j])) if on else None for j in range(t)]

  def _copies(self, step: int, t: int, copies: int) -> np.ndarray:
    """(B_local, T) int: which cached rendering (`cached_augmentation`) each frame of this
    host's clips of batch `step` uses; seeded like `_augmentations`."""
    return np.stack([np.random.default_rng([self.seed, step, 2, int(row)]).integers(
        0, copies, t) for row in self._rows()])

  def cached_augmentation(self, copy: int, record: int) -> Optional[tuple]:
    """(scale, shift) of rendering `copy` of frame `record` for a trunk cache, or None."""
    if self.augment is None:
      return None
    return self._draw(np.random.default_rng([self.seed, 3, copy, int(record)]), 1)[0]

  def render(self, records: np.ndarray, augs: Sequence[Optional[tuple]]
             ) -> tuple[np.ndarray, np.ndarray]:
    """(N,) records with one augmentation each -> (N, S, S, 3) uint8 model inputs and
    (N, P, 2) 2D joints in their pixels."""
    return self.render_copies(records, [augs])[0]

  def render_copies(self, records: np.ndarray, augs: Sequence[Sequence[Optional[tuple]]]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """render(records, a) for each a of `augs` (C lists of N augmentations), reading and
    decoding each record once: C (images, joints) pairs as render returns them."""
    def frame(record, per_copy):
      image, joints = self._example(record)
      return [scale_and_crop(image, joints, self.input_size,
                             *(aug if aug is not None else (1.0, (0.5, 0.5))))
              for aug in per_copy]

    frames = list(self._pool.map(frame, records, zip(*augs)))   # N lists of C
    return [(np.stack([f[c][0] for f in frames]), np.stack([f[c][1] for f in frames]))
            for c in range(len(augs))]

  def _describe(self, record: int) -> str:
    i = self.index
    return (f"{self.name}, record {record} (sequence "
            f"{i.sequence_names[i.sequence[record]]!r}, frame {i.frame_index[record]})")

  def _read(self, record: int):
    try:
      return self.source[int(record)]
    except Exception as e:  # a damaged record: say which one instead of a bare decode error
      if self.corrupt_records == "skip":
        return e
      raise RuntimeError(
          f"could not read {self._describe(record)}: {e} (file "
          f"{record_file(self.files, int(record))}). Rebuild the dataset, or set "
          "--config.dataset.corrupt_records=skip to skip such records") from e

  def _substitute(self, record: int, error: Exception):
    """Under "skip": the nearest readable frame of `record`'s sequence, counted once."""
    i = self.index
    same = np.flatnonzero(i.sequence == i.sequence[record])
    order = same[np.argsort(np.abs(i.frame_index[same] - i.frame_index[record]),
                            kind="stable")]
    with self._skipped_lock:
      new = record not in self.skipped
      self.skipped.add(int(record))
      count = len(self.skipped)
    if new:
      logging.warning("Skipping unreadable %s (file %s): %s; %d record(s) skipped so far",
                      self._describe(record), record_file(self.files, int(record)), error,
                      count)
    for other in order[1:]:
      if int(other) in self.skipped:
        continue
      ex = self._read(int(other))
      if not isinstance(ex, Exception):
        return ex
      with self._skipped_lock:
        self.skipped.add(int(other))
    raise RuntimeError(f"no readable frame left in the sequence of {self._describe(record)}")

  def _example(self, record: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored (S, S, 3) uint8 crop and (P, 2) float32 2D joints of `record` (or of
    its substitute under corrupt_records="skip"), checked."""
    ex = self._read(record)
    if isinstance(ex, Exception):
      ex = self._substitute(int(record), ex)
    image, joints = np.asarray(ex["image"]), np.asarray(ex["pose_2d"], np.float32)
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
      raise ValueError(f"{self._describe(record)}: expected a square (S, S, 3) image, got "
                       f"{image.shape}")
    if joints.shape != (self.index.num_joints, 2) or not np.all(np.isfinite(joints)):
      raise ValueError(f"{self._describe(record)}: pose_2d must be finite with shape "
                       f"({self.index.num_joints}, 2), got {joints.shape}")
    return image, joints

  def batch(self, step: int, cached_copies: int = 0) -> dict[str, np.ndarray]:
    """The batch at `step` (training) or the step-th batch of the pass (evaluation).

    cached_copies > 0: no images are read; "copy" (B, T) says which of that many cached
    renderings of each frame the step uses (training/trunk_cache.py).
    """
    ids = self._clip_ids(step)
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    records = self.clips[safe]                                   # (B, T)
    mask = self.clip_mask[safe] & valid[:, None]
    b, t = records.shape
    rel = poses.root_relative(self.index.pose_3d[records], self.norm.root_joint)
    targets = {
        "pose_3d": self.norm.normalize(rel).astype(np.float32),
        "pose_3d_mm": rel.astype(np.float32),
        "mask": mask,
        "record": np.where(mask, records, -1),
    }
    if cached_copies:
      return dict(targets, copy=self._copies(step, t, cached_copies))
    image, pose_2d = self.render(records.reshape(-1), self._augmentations(step, t))
    return dict(targets, image=image.reshape((b, t) + image.shape[1:]),
                pose_2d=pose_2d.reshape((b, t) + pose_2d.shape[1:]))

  def iterate(self, start_step: int = 0, num_steps: Optional[int] = None,
              prefetch: int = 2, cached_copies: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches start_step, start_step + 1, ..., assembled ahead in a thread."""
    stop = num_steps if num_steps is not None else (
        None if self.shuffle else self.num_batches)
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    done = threading.Event()

    def produce():
      step = start_step
      try:
        while not done.is_set() and (stop is None or step < stop):
          q.put(self.batch(step, cached_copies))
          step += 1
        q.put(StopIteration())
      except BaseException as e:  # surfaced in the consumer with its traceback
        q.put(e)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
      while True:
        item = q.get()
        if isinstance(item, StopIteration):
          return
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      done.set()
      while thread.is_alive():  # unblock a producer waiting on a full queue
        try:
          q.get_nowait()
        except queue.Empty:
          thread.join(0.05)


# --------------------------------------------------------------------------- entry point


@dataclasses.dataclass
class Pipeline:
  train: ClipLoader
  eval: ClipLoader
  norm: poses.Normalization
  train_index: SplitIndex
  eval_index: SplitIndex


def load_normalization(workdir: Optional[str], train_index: SplitIndex,
                       root_joint: int) -> poses.Normalization:
  """The run's statistics: read from <workdir>/normalization.json, else computed and saved.

  Saving them with the run makes evaluation and inference un-normalise exactly as training
  normalised, even if the dataset is rebuilt later.
  """
  if workdir and workdir_lib.has_normalization(workdir):
    return workdir_lib.load_normalization(workdir)
  norm = poses.Normalization.from_poses(train_index.pose_3d, root_joint)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    workdir_lib.save_normalization(norm, workdir)
  return norm


def with_mean_bones(index: SplitIndex) -> SplitIndex:
  """The split with every pose's bones set to the split's mean bone lengths.

  For config.dataset.rescale_train_bones (the authors' training labels): the targets then
  hold one skeleton's proportions, not each training subject's, which the model could only
  learn to tell apart by the subjects' looks.
  """
  parents = joints.parents(index.num_joints)
  if all(q < 0 for q in parents):
    raise ValueError(f"config.dataset.rescale_train_bones: no skeleton is known for "
                     f"{index.num_joints} joints (rpsm_jax/joints.py has 17 and 14)")
  lengths = poses.bone_lengths(index.pose_3d, parents).mean(0)
  logging.info("Training labels rescaled to the training split's mean bone lengths "
               "(mm, per joint): %s", [round(float(x), 1) for x in lengths])
  return dataclasses.replace(
      index, pose_3d=poses.rescale_bones(index.pose_3d, parents, lengths))


def create_pipeline(config, workdir: Optional[str] = None,
                    shard: tuple[int, int] = (0, 1)) -> Pipeline:
  """Builds the training and evaluation loaders from `config` (see configs/default.py).

  `shard` = (host index, host count): each host reads its rows of every global batch,
  training and evaluation alike (evaluation is scored across hosts, then gathered).
  """
  builder = datasets.prepare(config.dataset)
  policy = config.dataset.get("corrupt_records", "stop")
  train_index = read_index(builder, config.dataset.train_split, corrupt_records=policy)
  eval_index = read_index(builder, config.dataset.eval_split, corrupt_records=policy)
  for name, index in (("train", train_index), ("eval", eval_index)):
    if index.num_joints != config.model.num_joints:
      raise ValueError(f"config.model.num_joints={config.model.num_joints} but the {name} "
                       f"split of {builder.info.full_name} has {index.num_joints} joints")
  if not 0 <= config.dataset.root_joint < train_index.num_joints:
    raise ValueError(f"config.dataset.root_joint={config.dataset.root_joint} is not a joint "
                     f"index (P={train_index.num_joints})")
  if config.dataset.get("rescale_train_bones", False):
    train_index = with_mean_bones(train_index)
  norm = load_normalization(workdir, train_index, config.dataset.root_joint)
  common = dict(input_size=config.model.input_size, seed=config.seed,
                num_workers=config.dataset.num_workers)
  train_clips = make_clips(train_index, config.clip_length, config.frame_step,
                           config.clip_stride)
  eval_clips = make_clips(eval_index, config.clip_length, config.frame_step,
                          cover_all=True)
  train = ClipLoader(builder.as_data_source(split=config.dataset.train_split),
                     train_index, *train_clips, norm,
                     batch_size=config.batch_size, shuffle=True,
                     augment=config.augment, shard=shard, corrupt_records=policy,
                     files=record_files(builder, config.dataset.train_split),
                     name=f"{builder.info.full_name} {config.dataset.train_split}", **common)
  evaluation = ClipLoader(builder.as_data_source(split=config.dataset.eval_split),
                          eval_index, *eval_clips, norm, batch_size=config.eval_batch_size,
                          shuffle=False, shard=shard,
                          files=record_files(builder, config.dataset.eval_split),
                          name=f"{builder.info.full_name} {config.dataset.eval_split}",
                          **common)
  return Pipeline(train, evaluation, norm, train_index, eval_index)
