"""Builds and worker pools end with their parent, whatever kills it.

Each test runs a build (or a bare pool) in a fresh interpreter, signals it at start-up
(workers just spawned) or mid-build (a shard read, more to come), then looks in /proc
for any process that inherited the test's marker: spawned workers and the
multiprocessing resource tracker must all be gone within seconds.
"""

import functools
import os
import signal

import pytest

from data._builder_tools import builders
from data._builder_tools import pool
from data._builder_tools import testing
from data.h36m_clips import h36m_clips_dataset_builder as h36m_lib
from data.h36m_clips import h36m_clips_dataset_builder_test as h36m_test
from data.humaneva_clips import humaneva_clips_dataset_builder as humaneva_lib
from data.humaneva_clips import humaneva_clips_dataset_builder_test as humaneva_test
from data.mpii_2d import mpii_2d_dataset_builder as mpii_lib
from data.mpii_2d import mpii_2d_dataset_builder_test as mpii_test
from data.synthetic_clips import synthetic_clips_dataset_builder as synthetic_lib

_DELAY_S = 0.1  # The parent reads each item this late (testing.paced_build).


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["pdeathsig", "watchdog"])
def test_killed_parent_takes_busy_and_idle_workers_and_tracker(tmp_path, pdeathsig):
  """Either mechanism alone ends the workers; the resource tracker then ends too."""
  outcome = testing.run_and_signal(testing.hold_pool, (tmp_path,), tmp_path,
                                   signal.SIGKILL, testing.first_shard_read(tmp_path),
                                   pdeathsig=pdeathsig)
  assert outcome.returncode == -signal.SIGKILL
  assert not outcome.survivors, outcome.survivors


def test_sigterm_stops_the_pool_and_exits_naming_it(tmp_path):
  outcome = testing.run_and_signal(testing.hold_pool, (tmp_path, True), tmp_path,
                                   signal.SIGTERM, testing.first_shard_read(tmp_path))
  assert outcome.returncode == 128 + signal.SIGTERM, outcome.stderr
  assert "build stopped by SIGTERM" in outcome.stderr
  assert not outcome.survivors, outcome.survivors


def test_one_build_per_config_and_stale_incomplete_folders_removed(tmp_path):
  (tmp_path / "incomplete.ABCDEF_1.0.0").mkdir()
  (tmp_path / "0.9.0").mkdir()
  with builders.build_lock(str(tmp_path), "x/y/1.0.0"):
    with pytest.raises(RuntimeError, match=r"another build .* is running \(pid \d+"):
      with builders.build_lock(str(tmp_path), "x/y/1.0.0"):
        pass
  with builders.build_lock(str(tmp_path), "x/y/1.0.0"):  # Released on exit.
    assert builders.remove_stale_incomplete(str(tmp_path), "x/y/1.0.0") == [
        str(tmp_path / "incomplete.ABCDEF_1.0.0")]
  assert sorted(p.name for p in tmp_path.iterdir()) == [".build.lock", "0.9.0"]


# Builder name -> (writes the miniature release or None, builder factory (picklable,
# light to import in the child), the environment that gives it 2 workers).
_BUILDS = {
    "h36m_clips": (h36m_test._write_release,  # pylint: disable=protected-access
                   functools.partial(h36m_lib.Builder, config=h36m_test._config()),  # pylint: disable=protected-access
                   {"H36M_CLIPS_WORKERS": "2"}),
    "humaneva_clips": (humaneva_test._write_release,  # pylint: disable=protected-access
                       functools.partial(humaneva_lib.Builder,
                                         config=humaneva_test._config()),  # pylint: disable=protected-access
                       {"HUMANEVA_CLIPS_WORKERS": "2"}),
    "mpii_2d": (mpii_test._write_release,  # pylint: disable=protected-access
                functools.partial(mpii_lib.Builder, config=mpii_lib.Mpii2dConfig(
                    name="mini", image_size=mpii_test._SIZE, examples_per_shard=2)),  # pylint: disable=protected-access
                {"MPII_2D_WORKERS": "2"}),
    "synthetic_clips": (None, functools.partial(synthetic_lib.Builder, config="tiny"),
                        {"SYNTHETIC_CLIPS_WORKERS": "2"}),
}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
  """Each builder's miniature release, written once."""
  out = {}
  for name, (write, _, _) in _BUILDS.items():
    out[name] = None
    if write is not None:
      out[name] = tmp_path_factory.mktemp(name)
      write(out[name])
  return out


@pytest.mark.parametrize("when", ["start-up", "mid-build"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL",
                                                                          "SIGTERM"])
@pytest.mark.parametrize("name", sorted(_BUILDS))
def test_signalled_build_leaves_nothing_running_and_nothing_complete(
    tmp_path, releases, name, signum, when):
  _, factory, env = _BUILDS[name]
  work_dir, data_dir = tmp_path / "work", tmp_path / "tfds"
  work_dir.mkdir()
  ready = (testing.workers_started if when == "start-up"
           else testing.first_shard_read(work_dir))
  outcome = testing.run_and_signal(
      testing.paced_build, (factory, str(data_dir), releases[name], str(work_dir),
                            _DELAY_S), work_dir, signum, ready, env=env)
  assert not outcome.survivors, outcome.survivors
  assert (outcome.shards_read == 0) == (when == "start-up")
  builder = factory(data_dir=str(data_dir))
  assert not builder.is_prepared()
  config_dir = data_dir / name / builder.builder_config.name
  left = sorted(p.name for p in config_dir.iterdir()) if config_dir.exists() else []
  assert not [n for n in left if n[0].isdigit()], left  # No version folder.
  if signum == signal.SIGKILL:
    assert outcome.returncode == -signal.SIGKILL
  else:
    assert outcome.returncode == 128 + signal.SIGTERM, outcome.stderr
    assert "build stopped by SIGTERM" in outcome.stderr, outcome.stderr
    assert not [n for n in left if n.startswith("incomplete.")], left



class _SignalsInDel:
  """Sends this process SIGTERM from __del__, where a handler's exception is only printed."""

  def __del__(self):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):  # Python code, so the handler runs here, inside __del__.
      pass


_SWALLOWED = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_SWALLOWED
def test_a_stop_signal_swallowed_in_a_destructor_still_stops_the_build():
  def items():
    yield 1
    _SignalsInDel()  # Collected at once.
    yield 2
    yield 3

  read = []
  with pytest.raises(builders.BuildStopped) as stopped:
    with builders.stop_on_signals("test/build/1.0.0"):
      for item in builders.until_stopped(items()):
        read.append(item)
  assert stopped.value.code == 128 + signal.SIGTERM
  assert read == [1, 2]  # Stopped before the item after the swallowed signal.
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@_SWALLOWED
def test_a_stop_signal_swallowed_after_the_last_item_stops_at_the_end():
  with pytest.raises(builders.BuildStopped):
    with builders.stop_on_signals("test/build/1.0.0"):
      _SignalsInDel()
  assert not builders._stop_signalled  # pylint: disable=protected-access


def test_a_stop_signal_during_a_queue_put_is_delivered_after_it():
  """The parent's queue puts hold the signal back: a handler raising inside put() could
  leave the queue's lock held and close() blocked on it."""
  inside = []
  with pytest.raises(builders.BuildStopped):
    with builders.stop_on_signals("test/build/1.0.0"):
      handler = signal.getsignal(signal.SIGTERM)
      with pool._signals_held():  # pylint: disable=protected-access
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # Python code: an unheld handler would have run here.
          pass
        inside.append(signal.getsignal(signal.SIGTERM) is not handler)
      inside.append("after the block")  # Not reached: the handler raises on the way out.
  assert inside == [True]
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
