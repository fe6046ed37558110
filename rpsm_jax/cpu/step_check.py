"""conv_algorithm="auto", second look: the whole train step, per-layer choices vs oneDNN.

Why: autotune times each layer alone, which cannot see what a oneDNN call costs inside a
step (what XLA runs around it). On a 2-core AVX-512 AMD EPYC (2026-12-07) the two
disagreed in opposite directions: phase 2's small stage layers, won alone by oneDNN, ran
27-33 steps/s on it against 46-47 on XLA (hence autotune's per-call charge), while phase
1's trunk ran 13.2-13.5 steps/s with oneDNN on every layer against 10.7-11.5 with the
per-layer choices, which that charge had moved to XLA and Winograd.

What: a run's first train step is compiled twice, with the per-layer choices ("auto") and
with oneDNN on every layer it runs ("onednn"); both run alternately on that step's batch
(state copies, so the run's own state is untouched) and the faster median is kept. The
result is cached per CPU and step program (a digest of the auto step's HLO) in
cache_dir()/conv_choices_<cpu>_steps.json beside the layer choices; as there, a check timed
while other processes kept the cores busy serves its run only. Costs one more compilation,
a few steps and, while it runs, a second step's memory, returned to the OS afterwards
(xla_cpu.release_free_memory; 2-core EPYC, jemalloc: 200 steps of phase 1 peaked at 0.93
GB RSS against 0.86 without the check, 1.16 before the release), once per machine and
program; steps slower than MAX_STEP_S are not checked.
"""

import hashlib
import json
import logging
import os
import statistics
import threading
import time
from typing import Any, Callable, Optional

import jax

from rpsm_jax.cpu import autotune
from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import onednn
from rpsm_jax.cpu import xla_cpu

CANDIDATES = ("auto", "onednn")
WARMUP, REPEATS = 2, 5   # calls per candidate: untimed after compiling, then timed
# Steps slower than this are not checked (the per-layer choices stand): the check runs
# each candidate 1 + WARMUP + REPEATS times and holds both steps' memory.
MAX_STEP_S = 1.0
_lock = threading.Lock()
_unsaved: dict = {}      # checks timed beside other work: this process's only


def default_path() -> str:
  """Beside autotune's layer choices: <their name>_steps.json."""
  base, ext = os.path.splitext(autotune.default_cache_path())
  return f"{base}_steps{ext or '.json'}"


def program_key(hlo_text: str) -> str:
  return hashlib.sha256(hlo_text.encode()).hexdigest()[:16]


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f).get("steps", {})
  except (OSError, ValueError):
    return {}


def choose(label: str, key: str, run: Callable[[str], Callable[[], Any]],
           path: Optional[str] = None) -> str:
  """"auto" or "onednn": the faster whole step, cached under `key` (program_key).

  label: what the step is, for the log (e.g. "phase 1 (2D pretraining)").
  run: candidate -> a function that runs one step with it and waits for the result (the
    first call compiles).
  """
  recorded = autotune.RUN.get("steps", key)   # a restarted run keeps its choice
  if recorded in CANDIDATES:
    return recorded
  choice = _choose(label, key, run, path or default_path())
  autotune.RUN.put("steps", key, choice)
  return choice


def _choose(label: str, key: str, run: Callable[[str], Callable[[], Any]], path: str) -> str:
  with _lock:
    known = _unsaved.get(key) or _read(path).get(key)
    if known and known.get("choice") in CANDIDATES:
      return known["choice"]
    steps = {"auto": run("auto")}
    steps["auto"]()   # compiles
    tick = time.perf_counter()
    steps["auto"]()
    first_s = time.perf_counter() - tick
    if first_s > MAX_STEP_S:
      # The check would cost minutes and a second step's memory (the paper config's 368 px
      # step takes ~27 s on 2 cores): the per-layer choices stand.
      logging.info("conv_algorithm auto: the %s step takes %.1f s, more than the whole-step "
                   "check's %.1f s: the per-layer choices, unchecked", label, first_s,
                   MAX_STEP_S)
      _save(path, key, {"choice": "auto", "label": label, "unchecked_step_s": first_s})
      return "auto"
    steps["onednn"] = run("onednn")
    for _ in range(2):   # compiles, then a first call, as auto above
      steps["onednn"]()
    for name in CANDIDATES:   # the rest of the warm-up
      for _ in range(WARMUP - 1):
        steps[name]()
    seconds = {name: [] for name in CANDIDATES}
    before, start = autotune.cpu_seconds(), time.monotonic()
    for _ in range(REPEATS):   # alternately, so a burst of other load hits both alike
      for name in CANDIDATES:
        tick = time.perf_counter()
        steps[name]()
        seconds[name].append(time.perf_counter() - tick)
    others = autotune.others_since(before, start)
    ms = {name: round(statistics.median(v) * 1e3, 2) for name, v in seconds.items()}
    choice = min(CANDIDATES, key=lambda name: ms[name])
    entry = {"choice": choice, "ms": ms, "label": label,
             "other_cores": None if others is None else round(others, 2)}
    logging.info("conv_algorithm auto, whole %s step: %s (median ms: %s; each: %s; other "
                 "processes %s cores)", label, "oneDNN on every layer" if choice == "onednn"
                 else "the per-layer choices", ", ".join(f"{k} {v}" for k, v in ms.items()),
                 "; ".join(f"{k} " + " ".join(f"{x * 1e3:.0f}" for x in v)
                           for k, v in seconds.items()),
                 "?" if others is None else f"{others:.1f}")
    if others is not None and others > autotune.MAX_OTHER_CORES:
      _unsaved[key] = entry
      logging.warning("conv_algorithm auto: the %s step was timed while other processes "
                      "kept %.1f cores busy: its choice serves this run only", label, others)
      return choice
    _save(path, key, entry)
    return choice


def _save(path: str, key: str, entry: dict) -> None:
  """Adds `entry` to the file, merged with what other processes wrote meanwhile."""
  try:
    autotune.write_json(path, {"cpu": autotune.cpu_description(),
                               "steps": {**_read(path), key: entry}})
  except OSError as e:   # a read-only home: the choice lasts for this process only
    _unsaved[key] = entry
    logging.warning("conv_algorithm auto: could not save %s: %s", path, e)


def applicable(model_config) -> bool:
  """Whether a run with `model_config` (config.model) gets the check: conv_algorithm "auto"
  on a CPU, in one process (every process must compile the same program; autotune's fixed
  multi-process rule applies there), with oneDNN built."""
  return (model_config.get("conv_algorithm", "auto") == "auto"
          and jax.default_backend() == "cpu"
          and jax.process_count() == 1 and onednn.available()[0])


def choose_model(label: str, model, step_fn, state, batch):
  """`model` (per-layer choices) or its clone with oneDNN on every layer, whichever ran
  `step_fn(state, batch) -> (state, outputs)` faster (state.apply_fn is the model's apply;
  step_fn may donate its state: copies are run). Returns (model, state with its apply)."""
  onednn_model = model.clone(conv=convolution.make_conv("onednn"))
  models = {"auto": model, "onednn": onednn_model}
  key = program_key(step_fn.lower(state, batch).as_text())

  def run(name):
    holder = {"state": jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x,
                                    state.replace(apply_fn=models[name].apply))}

    def once():
      holder["state"], outputs = step_fn(holder["state"], batch)
      jax.block_until_ready(outputs)
    return once

  chosen = models[choose(label, key, run)]
  # The check's state copies and the other step's buffers are freed by now; without this
  # the allocator would keep their pages for the rest of the run.
  xla_cpu.release_free_memory()
  return chosen, state.replace(apply_fn=chosen.apply)
