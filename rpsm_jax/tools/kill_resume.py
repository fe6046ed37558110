"""Kills a training run at random moments, resumes it, and checks it ends where an
uninterrupted run ends.

  python -m rpsm_jax.kill_resume --config=configs/synthetic_tiny.py --workdir=/tmp/kr \\
      --kills=5 [--signal=KILL] [--seed=0] [-- --config.num_train_steps=20 ...]

1. Trains `<workdir>/reference` without interruption (timing the run).
2. Starts the same run in `<workdir>/interrupted` and sends it SIGKILL (or --signal) at a
   uniformly random moment of that duration, --kills times, restarting it after each.
3. Lets it finish and compares the final checkpoints: parameters, optimiser state and
   step must be identical (bitwise on one CPU: XLA:CPU is deterministic for a fixed
   program, batches depend only on (seed, step), and nothing else carries state).
Exits 0 when they match, 1 otherwise. Arguments after `--` go to rpsm_jax.main.
"""

import os
import random
import signal
import subprocess
import sys
import time

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


def compare(dir_a: str, dir_b: str) -> float:
  """Max abs difference between the latest train states of two workdirs (inf if their
  steps differ)."""
  # Imported here: the parent needs JAX only after its children have finished.
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rpsm_jax import model_factory  # pylint: disable=g-import-not-at-top
  from rpsm_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import optim  # pylint: disable=g-import-not-at-top
  from rpsm_jax.training import train  # pylint: disable=g-import-not-at-top

  config = workdir_lib.load_config(dir_a)
  states = []
  for workdir in (dir_a, dir_b):
    model = model_factory.create_model(config.model)
    tx, _ = optim.create_optimizer(config.optimizer, config.num_train_steps)
    state = train.create_train_state(config, model, tx, jax.random.key(0))
    manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
    states.append(manager.restore(state))
    manager.close()
  a, b = states
  if int(a.step) != int(b.step):
    return float("inf")
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves((a.params, a.opt_state)),
                             jax.tree.leaves((b.params, b.opt_state))))


def main(argv):
  extra = list(argv[1:])
  reference = os.path.join(_WORKDIR.value, "reference")
  interrupted = os.path.join(_WORKDIR.value, "interrupted")
  duration = _run(reference, extra)
  print(f"reference run: {duration:.1f} s")
  rng = random.Random(_SEED.value)
  signum = getattr(signal, f"SIG{_SIGNAL.value}")
  for i in range(_KILLS.value):
    delay = rng.uniform(0.0, duration)
    proc = subprocess.Popen(_command(interrupted, extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
      proc.wait(timeout=delay)
      print(f"kill {i + 1}: the run finished before {delay:.1f} s")
    except subprocess.TimeoutExpired:
      proc.send_signal(signum)
      proc.wait()
      print(f"kill {i + 1}: SIG{_SIGNAL.value} at {delay:.1f} s (exit {proc.returncode})")
  _run(interrupted, extra)
  diff = compare(reference, interrupted)
  print(f"max |reference - interrupted| over parameters and optimiser state: {diff}")
  sys.exit(0 if diff == 0.0 else 1)


def run():
  """The command line: `python -m rpsm_jax.kill_resume`."""
  app.run(main)


if __name__ == "__main__":
  run()
