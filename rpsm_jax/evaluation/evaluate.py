"""Evaluation: every frame of the eval split scored with every stage, in mm.

Protocol as the paper's Table 2 and the authors' code: non-overlapping clips, LSTM state
reset per clip, predictions un-normalised with the training statistics, root-aligned, MPJPE
averaged over all joints (root included). Reported per action, per subject and per stage:
P1 (MPJPE), P2 (P-MPJPE), N-MPJPE and MPJVE; the action-wise average (mean over actions, the
paper's "Avg") and the frame-wise average; the frame-wise MPJPE per position in the clip
("mpjpe_mm_by_clip_position": stage -> [position 1, 2, ...]); for clips of several frames,
the error split into its clip-constant and frame-to-frame parts (metrics.clip_error_split,
frame averages over whole clips: "clip_error_split_mm"); the error split into bone lengths
and bone directions (metrics.bone_length_split, frame averages: "bone_length_split_mm");
a mean-pose baseline for reference.

Non-finite predictions (a diverged model) never stop the evaluation: their frames are
counted per stage ("nonfinite_frames"), left out of every error, and the metrics that could
not be computed at all are listed ("not_computed", their values None). "subjects" names
the subjects scored.
"""

import json
import os
from typing import Optional

from absl import logging
import jax
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

from rpsm_jax import joints
from rpsm_jax import poses
from rpsm_jax import metrics
from rpsm_jax import parallel

METRICS = ("mpjpe_mm", "p_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm")


def predict(model, params, loader, max_clips: int = 0) -> dict:
  """Runs the model over the loader's clips (all, or the first `max_clips`).

  Every process scores its rows of each batch (the loader's shard) on its devices; the
  results are gathered, so every process returns the whole split, in batch order.
  params: replicated global arrays (training) or host/single-device arrays.

  Returns numpy arrays: pred (K, N, T, P, 3) root-relative mm, gt (N, T, P, 3) mm,
  mask (N, T), record (N, T).
  """
  mesh = parallel.create_mesh()
  forward = jax.jit(
      lambda p, image: model.apply({"params": p}, poses.model_input(image)),
      in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
      out_shardings=NamedSharding(mesh, PartitionSpec(None, parallel.AXIS)))
  params = parallel.as_replicated(params, mesh)
  num_batches = loader.num_batches
  if max_clips:
    num_batches = min(num_batches, -(-max_clips // loader.batch_size))
  preds, gts, masks, records = [], [], [], []
  for batch in loader.iterate(num_steps=num_batches):
    image = parallel.global_batch({"image": batch["image"]}, mesh)["image"]
    preds.append(parallel.gather(forward(params, image)))
    gts.append(batch["pose_3d_mm"])
    masks.append(batch["mask"])
    records.append(batch["record"])
  pred = loader.norm.denormalize(np.concatenate(preds, axis=1))
  gathered = parallel.gather_rows([np.stack(gts), np.stack(masks), np.stack(records)])
  # (batches, rows, ...) -> (batches * rows, ...): whole batches in order, as one process.
  gt, mask, record = (x.reshape((-1,) + x.shape[2:]) for x in
                      (_batch_major(g, len(gts)) for g in gathered))
  return {"pred": pred, "gt": gt, "mask": mask, "record": record}


def _batch_major(rows: np.ndarray, num_batches: int) -> np.ndarray:
  """Gathered (processes * batches, local rows, ...) -> (batches, global rows, ...)."""
  per = rows.shape[0] // num_batches   # processes
  rows = rows.reshape((per, num_batches) + rows.shape[1:])
  return np.concatenate(list(rows), axis=1)


def _mean(values: np.ndarray) -> Optional[float]:
  values = values[np.isfinite(values)]
  return float(values.mean()) if values.size else None


def score(out: dict, index, norm, root_joint: int) -> dict:
  """Per-frame errors of every stage, grouped by action and subject (see module doc)."""
  pred, gt, mask, record = out["pred"], out["gt"], out["mask"], out["record"]
  k = pred.shape[0]
  frame_mask = mask.reshape(-1)
  rec = record.reshape(-1)[frame_mask]
  # Per-frame errors, (K, F) over the valid frames F.
  errors = {name: [] for name in METRICS}
  nonfinite = {}
  split = {}
  bones = {}
  parents = joints.parents(gt.shape[-2])
  for s in range(k):
    # Frames with a non-finite coordinate are scored as zeros (an SVD of NaN fails), then
    # their errors set to NaN, which every mean below leaves out.
    finite = np.all(np.isfinite(pred[s]), axis=(-2, -1))            # (N, T)
    nonfinite[f"stage_{s + 1}"] = int((~finite & mask).sum())
    clean = np.where(finite[..., None, None], pred[s], 0.0)
    flat_finite = finite.reshape(-1)[frame_mask]
    flat_pred = clean.reshape((-1,) + pred.shape[-2:])[frame_mask]
    flat_gt = gt.reshape((-1,) + gt.shape[-2:])[frame_mask]
    for name, err in (
        ("mpjpe_mm", metrics.mpjpe(flat_pred, flat_gt, root=root_joint, reduce=False)),
        ("p_mpjpe_mm", metrics.p_mpjpe(flat_pred, flat_gt, reduce=False)),
        ("n_mpjpe_mm", metrics.n_mpjpe(flat_pred, flat_gt, root=root_joint,
                                       reduce=False))):
      errors[name].append(np.where(flat_finite, err, np.nan))
    if max(parents) >= 0:
      length_error, directions = metrics.bone_length_split(flat_pred, flat_gt, parents,
                                                           root=root_joint)
      bones[f"stage_{s + 1}"] = {
          "bone_length_error": _mean(np.where(flat_finite, length_error, np.nan)),
          "mpjpe_true_lengths": _mean(np.where(flat_finite, directions, np.nan))}
    if pred.shape[2] > 1:
      # Velocity error of frame t's step from t-1, assigned to frame t (NaN at t = 0).
      vel = metrics.mpjve(clean, gt, root=root_joint, mask=mask & finite, reduce=False)
      vel = np.concatenate([np.full(vel.shape[:-1] + (1,), np.nan), vel], axis=-1)
      errors["mpjve_mm"].append(vel.reshape(-1)[frame_mask])
      # Whole clips only (every frame counted and finite), so each clip mean is over T.
      whole = np.all(mask & finite, axis=1)
      constant, varying = metrics.clip_error_split(clean[whole], gt[whole], root=root_joint)
      split[f"stage_{s + 1}"] = {"clip_constant": _mean(constant),
                                 "frame_to_frame": _mean(varying),
                                 "clips": int(whole.sum())}
    else:
      errors["mpjve_mm"].append(np.full(rec.shape, np.nan))
  errors = {name: np.stack(v) for name, v in errors.items()}
  stages = [f"stage_{s + 1}" for s in range(k)]

  def group_table(ids, names):
    table = {}
    for i, name in enumerate(names):
      sel = ids[rec] == i
      if not sel.any():
        continue
      entry = {m: _mean(errors[m][-1, sel]) for m in METRICS}
      entry["frames"] = int(sel.sum())
      entry["stages"] = {st: {m: _mean(errors[m][s, sel]) for m in METRICS}
                         for s, st in enumerate(stages)}
      table[name] = entry
    return table

  per_action = group_table(index.action, index.action_names)
  per_subject = group_table(index.subject, index.subject_names)
  results = {
      name: {st: _mean(np.array([a["stages"][st][name] for a in per_action.values()],
                                dtype=np.float64))
             for st in stages}
      for name in METRICS
  }
  results["framewise"] = {name: {st: _mean(errors[name][s]) for s, st in enumerate(stages)}
                          for name in METRICS}
  # Where in its clip a frame sits: the LSTM has no past at position 1 (its state is reset
  # per clip), so this separates what temporal context adds from per-frame accuracy.
  position = np.broadcast_to(np.arange(mask.shape[1]), mask.shape).reshape(-1)[frame_mask]
  results["mpjpe_mm_by_clip_position"] = {
      st: [_mean(errors["mpjpe_mm"][s, position == t]) for t in range(mask.shape[1])]
      for s, st in enumerate(stages)}
  if split:
    results["clip_error_split_mm"] = split
  if bones:
    results["bone_length_split_mm"] = bones
  gt_valid = gt.reshape((-1,) + gt.shape[-2:])[frame_mask]
  baseline = metrics.mpjpe(np.broadcast_to(norm.mean_pose, gt_valid.shape), gt_valid,
                           root=root_joint, reduce=False)
  results["baseline_mean_pose_mpjpe_mm"] = _mean(np.array(
      [baseline[index.action[rec] == i].mean() for i in range(len(index.action_names))
       if (index.action[rec] == i).any()]))
  results["baseline_mean_pose_mpjpe_mm_framewise"] = float(baseline.mean())
  results["per_action"] = per_action
  results["per_subject"] = per_subject
  results["subjects"] = list(per_subject)
  results["frames"] = int(frame_mask.sum())
  results["nonfinite_frames"] = nonfinite
  results["not_computed"] = [f"{name} {st}" for name in METRICS for st in stages
                             if results[name][st] is None]
  if any(nonfinite.values()):
    logging.warning("Non-finite predictions in %s of %d frames; left out of the errors. "
                    "Not computed: %s", nonfinite, results["frames"],
                    ", ".join(results["not_computed"]) or "none")
  logging.info("Scored %d frames of subject(s) %s", results["frames"],
               ", ".join(results["subjects"]) or "none")
  return results


def evaluate(model, params, loader, norm, root_joint: int, max_clips: int = 0) -> dict:
  out = predict(model, params, loader, max_clips)
  results = score(out, loader.index, norm, root_joint)
  results["clips"] = int(out["mask"].any(axis=1).sum())
  return results


def _fmt(x) -> str:
  return "-" if x is None else f"{x:.1f}"


def markdown_table(results: dict) -> str:
  """Per action (last stage) and per stage (action-wise averages), in mm."""
  lines = ["| action | frames | MPJPE | P-MPJPE | N-MPJPE | MPJVE |",
           "|---|---:|---:|---:|---:|---:|"]
  for action, r in results["per_action"].items():
    lines.append(f"| {action} | {r['frames']} | " +
                 " | ".join(_fmt(r[m]) for m in METRICS) + " |")
  stages = list(results["mpjpe_mm"])
  lines += ["", "| stage | MPJPE (action avg) | P-MPJPE | N-MPJPE | MPJVE | "
            "MPJPE (frame avg) |", "|---|---:|---:|---:|---:|---:|"]
  for st in stages:
    lines.append(f"| {st} | " + " | ".join(_fmt(results[m][st]) for m in METRICS) +
                 f" | {_fmt(results['framewise']['mpjpe_mm'][st])} |")
  by_position = results.get("mpjpe_mm_by_clip_position", {})
  length = len(by_position.get(stages[-1], ()))
  if length > 1:
    lines += ["", "MPJPE (frame avg) by position in the clip:", "",
              "| stage | " + " | ".join(str(t + 1) for t in range(length)) + " |",
              "|---|" + "---:|" * length]
    lines += [f"| {st} | " + " | ".join(_fmt(x) for x in row) + " |"
              for st, row in by_position.items()]
  split = results.get("clip_error_split_mm")
  if split:
    lines += ["", "Error split over whole clips (frame avg, mm; only the frame-to-frame part "
              "can be smoothed away within a clip):", "",
              "| stage | clip-constant | frame-to-frame | clips |", "|---|---:|---:|---:|"]
    lines += [f"| {st} | {_fmt(r['clip_constant'])} | {_fmt(r['frame_to_frame'])} | "
              f"{r['clips']} |" for st, r in split.items()]
  bones = results.get("bone_length_split_mm")
  if bones:
    lines += ["", "Bone lengths (frame avg, mm): how far the predicted bones are from the "
              "true ones, and the MPJPE once every predicted bone is given its true length "
              "(directions kept):", "",
              "| stage | bone length error | MPJPE with true bone lengths |",
              "|---|---:|---:|"]
    lines += [f"| {st} | {_fmt(r['bone_length_error'])} | "
              f"{_fmt(r['mpjpe_true_lengths'])} |" for st, r in bones.items()]
  lines += ["", f"Mean-pose baseline MPJPE (action avg): "
            f"{_fmt(results['baseline_mean_pose_mpjpe_mm'])} mm; "
            f"{results['frames']} frames of subject(s) "
            f"{', '.join(results.get('subjects', [])) or '-'}."]
  bad = {st: n for st, n in results.get("nonfinite_frames", {}).items() if n}
  if bad:
    lines += ["", f"Non-finite predictions (frames, left out): {bad}; not computed: "
              f"{', '.join(results.get('not_computed', [])) or 'none'}."]
  return "\n".join(lines) + "\n"


def write_results(results: dict, outdir: str) -> None:
  """Writes <outdir>/results.json and <outdir>/results.md (atomically)."""
  os.makedirs(outdir, exist_ok=True)
  for name, text in (("results.json", json.dumps(results, indent=2)),
                     ("results.md", markdown_table(results))):
    path = os.path.join(outdir, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
