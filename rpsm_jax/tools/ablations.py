"""The paper's Table 4 ablations under one training budget, with its numbers beside ours.

`python -m rpsm_jax.ablations --config=configs/<name>.py --workdir=<dir>` trains every
variant of VARIANTS with the recipe (training/recipe.py) in <dir>/<variant>: the same
steps and the same frames per step (batch_size x clip_length, so clip length 1 gets 5x
the clips of clip length 5), one 2D pretraining in <dir>/pretrain2d shared by every
pretrained variant. A finished variant is skipped and an interrupted one resumes, so the
command can be rerun until it completes. It then writes <dir>/ablations.json,
<dir>/ablations.md (P1/P2 per stage, the paper's P1, the orderings the paper shows, one of
ours that separates temporal context from batch diversity, and whether they hold) and
<dir>/ablations.png (a bar chart of the last stages' P1).

With `seeds` > 1 every variant also trains with config.seed + 1, ..., + seeds - 1 (in
<dir>/<variant>_seed<s>; phase 1 stays shared, so the seeds vary phase 2's initialisation,
clip order and augmentation draws). Rows then hold the means over seeds and the last
stage's standard deviation, and each ordering says whether its difference exceeds twice
its standard error: whether these runs can order the two variants at all.
"""

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

from absl import logging
import cv2
import ml_collections
import numpy as np

from rpsm_jax import workdir as workdir_lib
from rpsm_jax.training import recipe

RESULTS_JSON = "ablations.json"
RESULTS_MD = "ablations.md"
CHART = "ablations.png"
_WALL = "ablation_wall.json"   # per variant: seconds spent training it, summed over runs


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the paper's Table 4.

  name: its folder under the ablation workdir; overrides: dotted config fields;
  paper_mm: the paper's MPJPE (Human3.6M, S9/S11, mm), None for a variant of ours;
  label: the paper's wording (ours where the paper has none).
  """
  name: str
  overrides: dict
  paper_mm: Optional[float]
  label: str


VARIANTS = (
    Variant("stages_3", {}, 73.10, "RPSM, 3 stages (clips of 5, LSTM)"),
    Variant("stages_2", {"model.num_stages": 2}, 75.55, "2 stages"),
    Variant("stages_1", {"model.num_stages": 1}, 80.15, "1 stage"),
    Variant("clip1_dense", {"clip_length": 1, "model.temporal": "dense"}, 81.12,
            "3 stages, clip length 1, dense layer instead of the LSTM"),
    Variant("clip1_dense_1stage", {"clip_length": 1, "model.temporal": "dense",
                                   "model.num_stages": 1}, 90.83,
            "1 stage, clip length 1, dense layer"),
    Variant("clip10_1stage", {"clip_length": 10, "model.num_stages": 1}, 82.88,
            "1 stage, clip length 10"),
    Variant("shared_2d", {"model.share_2d": True}, 71.44, "3 stages, all 2D layers shared"),
    Variant("no_pretrain", {"pretrain2d.enabled": False}, 111.3,
            "3 stages, no 2D pretraining (paper: no MPII)"),
    # Not in the paper: the dense layer on the LSTM's own clips of 5. The paper's
    # comparison (clip1_dense_1stage) also gives the per-frame model 40 independent frames
    # per step instead of 8 clips of 5 neighbours; this row separates the two effects.
    Variant("clip5_dense_1stage", {"model.temporal": "dense", "model.num_stages": 1}, None,
            "1 stage, clips of 5, dense layer (ours: the LSTM's comparison on the same "
            "clips)"),
)
BY_NAME = {v.name: v for v in VARIANTS}

# The paper's effects, as (description, smaller variant, larger variant, max ratio): the
# first variant's last-stage P1 must be below max ratio x the second's.
ORDERINGS = (
    ("3 stages < 2 stages", "stages_3", "stages_2", 1.0),
    ("2 stages < 1 stage", "stages_2", "stages_1", 1.0),
    ("clips of 5 + LSTM >= 5% below clip 1 + dense (3 stages)", "stages_3", "clip1_dense",
     0.95),
    ("clips of 5 + LSTM >= 5% below clip 1 + dense (1 stage)", "stages_1",
     "clip1_dense_1stage", 0.95),
    ("clip 5 < clip 10 (1 stage)", "stages_1", "clip10_1stage", 1.0),
    ("pretrained < not pretrained", "stages_3", "no_pretrain", 1.0),
    ("clips of 5: LSTM >= 5% below dense on the same clips (1 stage; ours)", "stages_1",
     "clip5_dense_1stage", 0.95),
)


def variant_config(base, variant: Variant, workdir: str,
                   seed: int = 0) -> ml_collections.ConfigDict:
  """base with the variant's overrides, its batch sized to base's frames per step, phase 1
  pointed at the shared <workdir>/pretrain2d, and config.seed = base.seed + seed."""
  config = ml_collections.ConfigDict(base.to_dict())
  config.seed = base.seed + seed
  frames = base.batch_size * base.clip_length
  for key, value in variant.overrides.items():
    node, _, field = key.rpartition(".")
    target = config
    for part in filter(None, node.split(".")):
      target = target[part]
    if field not in target:
      raise KeyError(f"variant {variant.name}: the config has no field {key!r}")
    target[field] = value
  # One budget: the same frames per step (rounded to whole clips).
  config.batch_size = max(1, round(frames / config.clip_length))
  config.eval_batch_size = max(1, round(base.eval_batch_size * base.clip_length
                                        / config.clip_length))
  config.pretrain2d.workdir = os.path.join(os.path.abspath(workdir), recipe.PRETRAIN_DIR)
  return config


def variant_dir(workdir: str, name: str, seed: int = 0) -> str:
  """<workdir>/<name> for seed 0 (so single-seed workdirs carry over), else
  <workdir>/<name>_seed<seed>."""
  return os.path.join(workdir, name if seed == 0 else f"{name}_seed{seed}")


def _wall(vdir: str) -> float:
  try:
    with open(os.path.join(vdir, _WALL)) as f:
      return float(json.load(f)["seconds"])
  except (FileNotFoundError, ValueError, KeyError):
    return 0.0


def _add_wall(vdir: str, seconds: float) -> None:
  os.makedirs(vdir, exist_ok=True)
  total = _wall(vdir) + seconds
  with open(os.path.join(vdir, _WALL + ".tmp"), "w") as f:
    json.dump({"seconds": total}, f)
  os.replace(os.path.join(vdir, _WALL + ".tmp"), os.path.join(vdir, _WALL))


def summarize(variant: Variant, results: dict, wall_s: float, batch_size: int,
              clip_length: int) -> dict:
  """A variant's row: P1/P2 per stage (action-wise averages, mm) and the paper's P1."""
  stages = list(results["mpjpe_mm"])
  return {
      "label": variant.label, "overrides": variant.overrides, "paper_mm": variant.paper_mm,
      "mpjpe_mm": results["mpjpe_mm"], "p_mpjpe_mm": results["p_mpjpe_mm"],
      "last_mpjpe_mm": results["mpjpe_mm"][stages[-1]],
      "last_p_mpjpe_mm": results["p_mpjpe_mm"][stages[-1]],
      # Frame averages; None for results written before the evaluation recorded them.
      "last_mpjpe_mm_by_clip_position":
          results.get("mpjpe_mm_by_clip_position", {}).get(stages[-1]),
      "baseline_mean_pose_mpjpe_mm": results.get("baseline_mean_pose_mpjpe_mm"),
      "frames": results.get("frames"), "step": results.get("step"),
      "batch_size": batch_size, "clip_length": clip_length, "wall_s": round(wall_s, 1),
  }


def over_seeds(per_seed: Sequence[dict]) -> dict:
  """One variant's row from its seeds' rows (summarize): P1/P2 per stage averaged, the
  last stage's P1 per seed and its sample standard deviation (None for one seed), wall
  time summed."""
  first = per_seed[0]
  if len(per_seed) == 1:
    return dict(first, seeds=1, last_mpjpe_mm_sd=None,
                per_seed_last_mpjpe_mm=[first["last_mpjpe_mm"]])

  def mean(key):
    return {k: float(np.mean([r[key][k] for r in per_seed])) for k in first[key]}

  last = [r["last_mpjpe_mm"] for r in per_seed]
  p1, p2 = mean("mpjpe_mm"), mean("p_mpjpe_mm")
  positions = [r.get("last_mpjpe_mm_by_clip_position") for r in per_seed]
  by_position = (None if None in positions
                 else [float(x) for x in np.mean(np.array(positions, float), axis=0)])
  return dict(first, mpjpe_mm=p1, p_mpjpe_mm=p2, last_mpjpe_mm=float(np.mean(last)),
              last_mpjpe_mm_by_clip_position=by_position,
              last_p_mpjpe_mm=p2[list(p2)[-1]], seeds=len(per_seed),
              last_mpjpe_mm_sd=float(np.std(last, ddof=1)), per_seed_last_mpjpe_mm=last,
              wall_s=round(sum(r["wall_s"] for r in per_seed), 1))


def check_orderings(rows: dict) -> list[dict]:
  """Each ordering of ORDERINGS: held (True/False) or None when a variant is missing.

  held compares the last stages' P1 (means over seeds). Where both variants ran several
  seeds, se_mm is the standard error of the difference of the means, and resolved says
  whether the difference exceeds 2 se_mm (None with one seed).
  """
  out = []
  for text, a, b, ratio in ORDERINGS:
    held, values, se, resolved = None, None, None, None
    if a in rows and b in rows:
      values = (rows[a]["last_mpjpe_mm"], rows[b]["last_mpjpe_mm"])
      held = bool(values[0] < ratio * values[1])
      sds = [rows[v].get("last_mpjpe_mm_sd") for v in (a, b)]
      if None not in sds:
        se = float(np.hypot(sds[0] / np.sqrt(rows[a]["seeds"]),
                            ratio * sds[1] / np.sqrt(rows[b]["seeds"])))
        resolved = bool(abs(values[0] - ratio * values[1]) > 2 * se)
    paper = (BY_NAME[a].paper_mm, BY_NAME[b].paper_mm)
    out.append({"ordering": text, "variants": [a, b], "max_ratio": ratio, "mm": values,
                "held": held, "se_mm": se, "resolved": resolved, "paper_mm": paper,
                "paper_held": None if None in paper else bool(paper[0] < ratio * paper[1])})
  return out


def _fmt(x) -> str:
  return "-" if x is None else f"{x:.1f}"


def markdown(rows: dict, orderings: list[dict], title: str) -> str:
  """The ablation table (P1 / P2 per stage) and the orderings, as Markdown."""
  k = max((len(r["mpjpe_mm"]) for r in rows.values()), default=0)
  seeded = any(r.get("seeds", 1) > 1 for r in rows.values())
  head = ["variant", "paper P1"] + [f"P1 s{i}" for i in range(1, k + 1)] + [
      f"P2 s{i}" for i in range(1, k + 1)] + (
          ["seeds", "last P1 sd", "last P1 per seed"] if seeded else []) + [
              "last P1 by clip position", "clips x frames", "wall s"]
  lines = [f"# {title}", "", "| " + " | ".join(head) + " |",
           "|---|" + "---:|" * (len(head) - 1)]
  for name, r in rows.items():
    p1 = [r["mpjpe_mm"].get(f"stage_{i}") for i in range(1, k + 1)]
    p2 = [r["p_mpjpe_mm"].get(f"stage_{i}") for i in range(1, k + 1)]
    cells = [name, _fmt(r["paper_mm"])] + [_fmt(x) for x in p1 + p2]
    if seeded:
      cells += [str(r.get("seeds", 1)), _fmt(r.get("last_mpjpe_mm_sd")),
                " / ".join(_fmt(x) for x in r.get("per_seed_last_mpjpe_mm", ()))]
    by_position = r.get("last_mpjpe_mm_by_clip_position")
    cells += [" / ".join(_fmt(x) for x in by_position) if by_position else "-",
              f"{r['batch_size']} x {r['clip_length']}", _fmt(r["wall_s"])]
    lines.append("| " + " | ".join(cells) + " |")
  base = next((r["baseline_mean_pose_mpjpe_mm"] for r in rows.values()), None)
  lines += ["", f"P1 = MPJPE, P2 = P-MPJPE, mm, action-wise averages over the evaluation "
            f"split; s<k> = stage k; by clip position: the last stage's frame averages at "
            f"positions 1, 2, ... of the evaluation clips (position 1 has no past). "
            f"Mean-pose baseline: {_fmt(base)} mm. Paper: Human3.6M S9/S11, Table 4." + (" With several seeds: means over seeds; sd = the last "
                                  "stage's sample standard deviation." if seeded else ""),
            "", "| ordering (paper's effect) | ours (mm) | holds | "
            + ("beyond 2 SE (SE mm) | " if seeded else "") + "paper (mm) |",
            "|---|---|---|" + ("---|" if seeded else "") + "---|"]
  yes_no = {None: "-", True: "yes", False: "no"}
  for o in orderings:
    ours = "not measured" if o["mm"] is None else f"{o['mm'][0]:.1f} vs {o['mm'][1]:.1f}"
    resolved = (f"{yes_no[o['resolved']]} ({_fmt(o['se_mm'])}) | " if seeded else "")
    paper = ("not in the paper" if None in o["paper_mm"]
             else f"{o['paper_mm'][0]} vs {o['paper_mm'][1]}")
    lines.append(f"| {o['ordering']} | {ours} | {yes_no[o['held']]} | {resolved}{paper} |")
  return "\n".join(lines) + "\n"


def bar_chart(rows: dict, path: str, width: int = 900, bar_h: int = 16) -> None:
  """Horizontal bars per variant: our last stage's P1 (blue) and the paper's (grey), mm.

  Drawn with cv2 (matplotlib is not a dependency). Writes a PNG at `path`.
  """
  names = list(rows)
  left, right, top = 170, 40, 40
  height = top + len(names) * (2 * bar_h + 14) + 30
  img = np.full((height, width, 3), 255, np.uint8)
  values = [v for r in rows.values() for v in (r["last_mpjpe_mm"], r["paper_mm"])
            if v is not None]
  vmax = max(values + [1.0]) * 1.1
  scale = (width - left - right) / vmax
  font = cv2.FONT_HERSHEY_SIMPLEX
  cv2.putText(img, "last-stage MPJPE, mm: ours (blue), paper H36M (grey)", (10, 22), font,
              0.55, (0, 0, 0), 1, cv2.LINE_AA)
  y = top
  for name in names:
    r = rows[name]
    cv2.putText(img, name, (8, y + bar_h + 4), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for value, colour in ((r["last_mpjpe_mm"], (200, 110, 30)), (r["paper_mm"],
                                                                 (160, 160, 160))):
      if value is not None:
        x1 = left + int(value * scale)
        cv2.rectangle(img, (left, y), (x1, y + bar_h), colour, -1)
        cv2.putText(img, f"{value:.1f}", (x1 + 4, y + bar_h - 3), font, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
      y += bar_h
    y += 14
  cv2.line(img, (left, top - 4), (left, y), (0, 0, 0), 1)
  if not cv2.imwrite(path, img):
    raise OSError(f"could not write {path}")


def run_ablations(base, workdir: str, variants: Optional[Sequence[str]] = None,
                  seeds: int = 1) -> dict:
  """Trains (or resumes, or skips) every variant, then writes the tables and the chart.

  Args:
    base: the config every variant starts from (its budget: num_train_steps, frames per
      step batch_size x clip_length).
    workdir: <workdir>/<variant> per variant (variant_dir), <workdir>/pretrain2d shared.
    variants: names from VARIANTS (default: all, in VARIANTS' order).
    seeds: phase 2 runs per variant, seeded base.seed, base.seed + 1, ...

  Returns:
    The ablations.json content, or {"preempted": True, ...} when a signal stopped a run.
  """
  from rpsm_jax.training import pretrain2d  # pylint: disable=g-import-not-at-top
  names = list(variants) if variants else [v.name for v in VARIANTS]
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    raise ValueError(f"unknown ablation variants {unknown}; known: {list(BY_NAME)}")
  if seeds < 1:
    raise ValueError(f"--seeds must be at least 1, got {seeds}")
  os.makedirs(workdir, exist_ok=True)
  rows, started = {}, time.time()
  configs = {n: variant_config(base, BY_NAME[n], workdir) for n in names}
  # Phase 1 once, timed on its own; every pretrained variant then finds it finished.
  pretrained = [c for c in configs.values() if recipe.uses_pretraining(c)]
  if pretrained:
    pre_dir = recipe.pretrain_workdir(pretrained[0], workdir)
    if recipe.finished_pretraining(pretrained[0], pre_dir) is None:
      t0 = time.time()
      pretrain2d.pretrain(pretrained[0], pre_dir)
      _add_wall(pre_dir, time.time() - t0)
  for name in names:
    variant, per_seed = BY_NAME[name], []
    for seed in range(seeds):
      config, vdir, results = _seed_run(base, variant, workdir, seed)
      if results is None:
        logging.info("Ablation %s (%s), seed %d, in %s", name,
                     variant.overrides or "base config", config.seed, vdir)
        t0 = time.time()
        results = recipe.run(config, vdir)
        _add_wall(vdir, time.time() - t0)
        if results.get("preempted"):
          return {"variant": name, "seed": config.seed, **results}
      per_seed.append(_summary(variant, config, vdir, results))
    rows[name] = over_seeds(per_seed)
  rows.update(finished_elsewhere(base, workdir, skip=rows))
  rows = {v.name: rows[v.name] for v in VARIANTS if v.name in rows}
  orderings = check_orderings(rows)
  out = {"base_config": {"num_train_steps": base.num_train_steps,
                         "frames_per_step": base.batch_size * base.clip_length,
                         "seeds": list(range(base.seed, base.seed + seeds)),
                         "dataset": f"{base.dataset.name}/{base.dataset.builder_config}"},
         "pretrain2d_wall_s": _wall(os.path.join(workdir, recipe.PRETRAIN_DIR)),
         "wall_s_this_run": round(time.time() - started, 1),
         "variants": rows, "orderings": orderings}
  _write(os.path.join(workdir, RESULTS_JSON), json.dumps(out, indent=2))
  title = (f"Ablations: {out['base_config']['dataset']}, {base.num_train_steps} steps of "
           f"{out['base_config']['frames_per_step']} frames")
  _write(os.path.join(workdir, RESULTS_MD), markdown(rows, orderings, title))
  bar_chart(rows, os.path.join(workdir, CHART))
  for o in orderings:
    logging.info("%s: %s (beyond 2 SE: %s)", o["ordering"], o["held"], o["resolved"])
  return out


def finished_elsewhere(base, workdir: str, skip: Sequence[str] = ()) -> dict:
  """{name: row} of the variants not in `skip` that earlier commands finished in `workdir`
  with `base`'s model, data and seed fields (seeds 0, 1, ... up to the first unfinished),
  so that a command run on a few variants (e.g. more seeds of two) still tabulates all.
  Runs saved with other settings are left out, with a log line."""
  rows = {}
  for variant in VARIANTS:
    if variant.name in skip:
      continue
    per_seed = []
    while True:
      try:
        config, vdir, results = _seed_run(base, variant, workdir, len(per_seed))
      except workdir_lib.ConfigChangeError as e:
        logging.warning("Ablations: leaving a run out of the tables: %s", e)
        break
      if results is None:
        break
      per_seed.append(_summary(variant, config, vdir, results))
    if per_seed:
      rows[variant.name] = over_seeds(per_seed)
  return rows


def _seed_run(base, variant: Variant, workdir: str, seed: int):
  """(config, run folder, phase 2's final results or None while unfinished) of one seed of
  a variant. Raises workdir.ConfigChangeError, naming the fields, when the folder holds a
  run trained with other model, data or seed settings (as resuming it would)."""
  config = variant_config(base, variant, workdir, seed)
  vdir = variant_dir(workdir, variant.name, seed)
  phase2 = recipe.phase2_config(config, vdir)
  workdir_lib.check_resume_config(phase2, vdir, config.get("allow_config_changes", False))
  return config, vdir, recipe.finished_training(phase2, vdir)


def _summary(variant: Variant, config, vdir: str, results: dict) -> dict:
  return summarize(variant, results, _wall(vdir), config.batch_size, config.clip_length)


def _write(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
