"""Metric writers: TensorBoard event files, a JSON-lines log and absl logging.

CLU's `metric_writers` package imports TensorFlow at import time (clu 0.0.12), which this
project does not install, so this module provides the same small interface
(`write_scalars`, `write_hparams`, `flush`, `close`) on TensorBoard's own pure-Python event
writer.
"""

import json
import os
import time
from typing import Any, Mapping

from absl import logging
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class MetricWriter:
  """Writes scalars to <logdir> as TensorBoard events and to <logdir>/metrics.jsonl.

  With `just_logging` (non-zero hosts of a multi-host run) only absl logging is written.
  """

  def __init__(self, logdir: str, just_logging: bool = False):
    self._events = self._jsonl = None
    if not just_logging:
      os.makedirs(logdir, exist_ok=True)
      self._events = EventFileWriter(logdir)
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    # None (a metric evaluation could not compute, e.g. of non-finite predictions) -> NaN.
    values = {k: float("nan") if v is None else float(np.asarray(v))
              for k, v in scalars.items()}
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    if self._events is None:
      return
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary))
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    logging.info("Hyper-parameters: %s", dict(hparams))
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({"hparams": {k: str(v) for k, v in hparams.items()}})
                        + "\n")

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._jsonl.close()
      self._events = self._jsonl = None
