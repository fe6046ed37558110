"""The benchmark's measuring: resident-set peaks, spreads, interleaved timings."""

import time

import numpy as np

from rpsm_jax.tools.benchmark import measure
from rpsm_jax.tools.benchmark import runners


def test_host_peak_sees_a_temporary_allocation():
  with measure.HostPeak() as peak:
    block = np.ones(64 * 2 ** 20, np.uint8)   # 64 MB, touched
    time.sleep(0.05)   # long enough for the sampling thread, where VmHWM cannot be reset
    del block
  assert peak.bytes >= 48 * 2 ** 20


def test_stats():
  s = measure.stats([3.0, 1.0, 2.0, 4.0])
  assert (s["min"], s["median"], s["max"]) == (1.0, 2.5, 4.0)
  assert s["q25"] <= s["median"] <= s["q75"]


def test_time_interleaved_alternates_runners():
  order = []

  def runner(name):
    return runners.Runner(name, lambda: order.append(name), lambda: order.append(name),
                          lambda: None, {})

  wall, cpu = measure.time_interleaved([runner("a"), runner("b")], "train", steps=2,
                                       repeats=3)
  assert order == ["a", "a", "b", "b"] * 3
  assert len(wall["a"]) == len(cpu["b"]) == 3 and min(wall["a"]) >= 0
