"""A progress bar with an ETA, and step and frame rates for the metric writers."""

import sys
import time

import tqdm


class Progress:
  """Tracks training progress from `start` to `total` steps.

  Rates are measured between consecutive `rates()` calls; the first interval of a run
  includes XLA compilation.
  """

  def __init__(self, total: int, start: int, frames_per_step: int):
    self.frames_per_step = frames_per_step
    self._bar = tqdm.tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                          file=sys.stderr, smoothing=0.1,
                          bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                                     "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    self._time, self._step = time.perf_counter(), start

  def rates(self, step: int) -> dict:
    now = time.perf_counter()
    steps = max(step - self._step, 0)
    seconds = max(now - self._time, 1e-9)
    self._time, self._step = now, step
    return {"steps_per_s": steps / seconds,
            "frames_per_s": steps * self.frames_per_step / seconds}

  def advance(self, step: int) -> None:
    self._bar.update(step - self._bar.n)

  def update(self, step: int, loss: float) -> None:
    self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    self.advance(step)

  def close(self) -> None:
    self._bar.close()
