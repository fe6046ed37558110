"""Kills a training run during training, resumes it, and checks it ends where an
uninterrupted run ends.

  python -m rpsm_jax.tools.kill_resume --config=configs/synthetic_tiny.py --workdir=/tmp/kr \\
      --kills=5 [--signal=KILL] [--seed=0] [-- --config.num_train_steps=20 ...]

1. Trains `<workdir>/reference` without interruption (timing the run).
2. Starts the same run in `<workdir>/interrupted` and, --kills times, sends it SIGKILL (or
   --signal) during training: once a checkpoint newer than the previous start's exists, at
   a random moment within about one checkpoint interval, and only while the last logged
   step is before the last step; it restarts the run after each. Each kill is reported with
   the checkpoint it followed; a run where no kill landed during training fails.
3. Lets it finish and compares the final checkpoints: parameters, optimiser state and
   step must be identical (bitwise on one CPU: XLA:CPU is deterministic for a fixed
   program, batches depend only on (seed, step), and nothing else carries state). NaN
   counts as a difference unless both states hold it at the same place.
Exits 0 when they match, 1 otherwise. Arguments after `--` go to rpsm_jax.main.
"""

import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from typing import Optional

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string("config", "configs/synthetic_tiny.py", "Config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for both runs.", required=True)
_KILLS = flags.DEFINE_integer("kills", 5, "How many times to kill the run.")
_SIGNAL = flags.DEFINE_enum("signal", "KILL", ["KILL", "TERM", "INT"], "Signal to send.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")


def _command(workdir: str, extra: list[str]) -> list[str]:
  return [sys.executable, "-m", "rpsm_jax.main", f"--config={_CONFIG.value}",
          f"--workdir={workdir}", *extra]


def _run(workdir: str, extra: list[str]) -> float:
  start = time.perf_counter()
  subprocess.run(_command(workdir, extra), check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  return time.perf_counter() - start


def _checkpoint_interval_s(workdir: str, every: int) -> Optional[float]:
  """Seconds per `every` training steps in a finished run, from its logged step rates.
  The first log's rate includes compilation and is left out; None when fewer than two
  logs hold a rate."""
  rates = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rate = json.loads(line).get("steps_per_s")
      if rate:
        rates.append(float(rate))
  return every / statistics.median(rates[1:]) if len(rates) > 1 else None


def _latest_checkpoint(workdir: str) -> int:
  """Newest finished checkpoint step on disk (0 when none): Orbax renames a step folder
  into place only when it is complete."""
  path = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
  return max(steps, default=0)


def _last_logged_step(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  last = 0
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          last = max(last, int(json.loads(line).get("step", 0)))
        except (ValueError, AttributeError):
          pass   # a line being written
  return last


def difference(a, b) -> float:
  """Max abs difference over the leaves of two pytrees; NaN-aware: a NaN (or inf) on one
  side only is an infinite difference, equal non-finite values none. inf if the trees'
  structures or shapes differ."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  if tree_a != tree_b:
    return math.inf
  worst = 0.0
  for x, y in zip(leaves_a, leaves_b):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
      return math.inf
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    d = np.where(same, 0.0, np.abs(x - y))
    d = np.where(np.isnan(d), np.inf, d)   # NaN on one side, or inf - inf
    if d.size:
      worst = max(worst, float(d.max()))
  return worst


def abstract_state(config):
  """The train state's shapes and dtypes (on the first device) for `config`: traced, not
  compiled, so comparing runs costs no model compilation."""
  import jax  # pylint: disable=g-import-not-at-top
  from rpsm_jax import model_factory  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import optim  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import train  # pylint: disable=g-import-not-at-top
  model = model_factory.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
  shapes = jax.eval_shape(lambda: train.create_train_state(config, model, tx,
                                                           jax.random.key(0)))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                      shapes)


def compare(dir_a: str, dir_b: str) -> float:
  """Max abs difference between the latest train states of two workdirs (NaN-aware; inf
  if their steps differ)."""
  # Imported here: the parent needs JAX only after its children have finished.
  from rpsm_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import checkpoints  # pylint: disable=g-import-not-at-top

  config = workdir_lib.load_config(dir_a)
  states = []
  template = abstract_state(config)
  for workdir in (dir_a, dir_b):
    manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
    states.append(manager.restore(template))
    manager.close()
  a, b = states
  if int(a.step) != int(b.step):
    return math.inf
  return difference((a.params, a.opt_state), (b.params, b.opt_state))


def _kill_during_training(workdir: str, extra: list[str], signum: int, total: int,
                          interval_s: float, rng: random.Random) -> str:
  """Starts the run, kills it once training is past a new checkpoint and before its last
  step; returns what happened (one line)."""
  before = _latest_checkpoint(workdir)
  proc = subprocess.Popen(_command(workdir, extra), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  while proc.poll() is None and _latest_checkpoint(workdir) <= before:
    time.sleep(0.05)
  if proc.poll() is not None:
    return f"the run ended (exit {proc.returncode}) before a new checkpoint"
  after = _latest_checkpoint(workdir)
  deadline = time.monotonic() + rng.uniform(0.0, interval_s)
  while proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)
  if proc.poll() is not None:
    return f"the run ended (exit {proc.returncode}) before the kill"
  if _last_logged_step(workdir) >= total or _latest_checkpoint(workdir) >= total:
    proc.kill()
    proc.wait()
    return "too late (training had ended): killed anyway, not counted"
  proc.send_signal(signum)
  proc.wait()
  return (f"during training, after the checkpoint at step {after} (latest "
          f"{_latest_checkpoint(workdir)} of {total}; exit {proc.returncode})")


def main(argv):
  extra = list(argv[1:])
  reference = os.path.join(_WORKDIR.value, "reference")
  interrupted = os.path.join(_WORKDIR.value, "interrupted")
  duration = _run(reference, extra)
  with open(os.path.join(reference, "config.json")) as f:
    config = json.load(f)
  total = int(config["num_train_steps"])
  every = min(int(config["checkpoint_every_steps"]), int(config["eval_every_steps"]))
  if every >= total:
    sys.exit(f"no checkpoint before the last step (checkpoint_every_steps={every}, "
             f"num_train_steps={total}): nothing to kill during training")
  # The random kill moment falls within one checkpoint interval of training, timed from
  # the reference's step rate (its wall time is mostly start-up and compilation, which
  # would push the moment past the last step).
  interval_s = (_checkpoint_interval_s(reference, every)
                or duration * every / total)
  print(f"reference run: {duration:.1f} s, {total} steps, a checkpoint every {every} "
        f"(about {interval_s:.2f} s of training)")
  rng = random.Random(_SEED.value)
  signum = getattr(signal, f"SIG{_SIGNAL.value}")
  landed = 0
  for i in range(_KILLS.value):
    if _latest_checkpoint(interrupted) + every >= total:
      print(f"kill {i + 1}: skipped (no checkpoint left before the last step)")
      continue
    what = _kill_during_training(interrupted, extra, signum, total, interval_s, rng)
    landed += what.startswith("during training")
    print(f"kill {i + 1}: SIG{_SIGNAL.value} {what}")
  _run(interrupted, extra)
  diff = compare(reference, interrupted)
  print(f"kills during training: {landed} of {_KILLS.value}")
  print(f"max |reference - interrupted| over parameters and optimiser state: {diff}")
  sys.exit(0 if diff == 0.0 and landed else 1)


def run():
  """The command line: `python -m rpsm_jax.kill_resume`."""
  app.run(main)


if __name__ == "__main__":
  run()
