"""`predict`: a trained run over a video or a folder of frames -> poses.npz, poses.json and
an animation (the formats: rpsm_jax.apps.predict's doc)."""

import json
import os
from typing import Optional

from absl import logging
import jax
import numpy as np
import tqdm

from rpsm_jax import crops
from rpsm_jax import poses
from rpsm_jax.apps import inference
from rpsm_jax.apps import streaming as streaming_lib
from rpsm_jax.apps.predict import animation as animation_lib
from rpsm_jax.apps.predict import boxes as boxes_lib
from rpsm_jax.apps.predict import frames as frames_lib
from rpsm_jax.apps.predict.frames import InputError

COORDINATES = ("camera frame, root-relative: x right, y down, z away from the camera; "
               "the root joint at 0")


def predict(run: inference.Run, input_path: str, output: str,
            boxes_path: Optional[str] = None, stages: str = "all",
            max_frames: Optional[int] = None, streaming: bool = False,
            animation: str = "mp4", fps: Optional[float] = None,
            panel_size: int = 256, frame_step: int = 1) -> dict:
  """Runs `run`'s model over a video or folder of frames and writes the outputs.

  Args: as the command-line flags of this module.

  Returns:
    The metadata written to poses.json (with 'outputs': the files written).
  """
  source = frames_lib.open_frames(input_path)
  boxes = boxes_lib.load_boxes(boxes_path) if boxes_path else None
  if max_frames is not None and max_frames < 1:
    raise InputError(f"--max_frames must be >= 1, got {max_frames}")
  if frame_step < 1:
    raise InputError(f"--frame_step must be >= 1, got {frame_step}")
  if boxes is not None and source.kind == "folder":  # a folder's frame count is exact
    boxes_lib.check_box_count(boxes, boxes_path, input_path, source.count, max_frames)
  config = run.config
  size, clip_length = config.model.input_size, config.clip_length
  k = config.model.num_stages
  stage_ids = list(range(1, k + 1)) if stages == "all" else [k]
  crop_kind = "boxes_file" if boxes is not None else "centre_square"
  if boxes is None:
    logging.warning("No --boxes given: cropping the largest centred square of every frame. "
                    "Give per-frame person boxes for the crop the model was trained on.")
  else:
    logging.info("Cropping around the %d person boxes of %s (short side grown to a "
                 "square)", len(boxes), boxes_path)
  os.makedirs(output, exist_ok=True)

  run_clip = ClipRunner(run, streaming, frame_step)
  # A clip takes every frame_step-th input frame, as training and evaluation take every
  # config.frame_step-th stored frame; the frame_step interleaved sub-sequences run as
  # clips of their own (evaluation's order), a window of clip_length x frame_step frames
  # at a time.
  window = clip_length * frame_step
  spacing_s = frame_step / source.fps if source.fps else None
  logging.info("Clips of %d frames, %d input frame(s) apart%s (the model's training "
               "clips: config.frame_step=%d stored frames apart)", clip_length,
               frame_step, f", {spacing_s:.3g} s at {source.fps:.3g} fps" if spacing_s
               else "", config.frame_step)
  fps = fps or source.fps or 10.0
  writer = animation_lib.AnimationWriter(os.path.join(output, f"poses.{animation}"), fps, panel_size) \
      if animation != "none" else None
  names, parents = run.joint_names, run.parents
  total = source.count
  if max_frames:
    total = min(total, max_frames) if total else max_frames
  poses_out, crop_boxes, person_boxes = [], [], []
  pending = []   # (frame, crop box, person box, crop) of the window being filled
  first_shape = None

  def flush():
    cuts, out = np.stack([p[3] for p in pending]), [None] * len(pending)
    for sub in range(min(frame_step, len(pending))):
      rows = np.arange(sub, len(pending), frame_step)
      sub_out = run_clip(cuts[rows], sub)[np.asarray(stage_ids) - 1]
      for j, i in enumerate(rows):
        out[i] = sub_out[:, j]
    for i, (frame, crop_box, person_box, _) in enumerate(pending):
      poses_out.append(out[i])
      crop_boxes.append(crop_box)
      person_boxes.append(person_box)
      if writer is not None:
        writer.add(animation_lib.compose_frame(frame, crop_box, person_box, out[i],
                                               stage_ids, names, parents, panel_size,
                                               len(poses_out) - 1))
    bar.update(len(pending))
    pending.clear()

  count = 0
  bar = tqdm.tqdm(total=total, unit="frame", desc="predict", dynamic_ncols=True)
  try:
    for frame in source:
      if max_frames and count >= max_frames:
        break
      if boxes is not None and count >= len(boxes):
        raise InputError(f"boxes file {boxes_path} has {len(boxes)} boxes but {input_path} "
                         "has more frames")
      first_shape = first_shape or frame.shape[:2]
      person_box = boxes[count] if boxes is not None else np.full(4, np.nan)
      crop_box = (crops.square_crop_box(person_box) if boxes is not None
                  else crops.centre_crop_box(*frame.shape[:2]))
      crop = crops.crop_and_resize(frame, crop_box, size)
      pending.append((frame, crop_box, person_box, crop))
      count += 1
      if len(pending) == window:
        flush()
    if pending:
      flush()
  finally:
    bar.close()
    if writer is not None:
      writer.close()
  if boxes is not None:
    boxes_lib.check_box_count(boxes, boxes_path, input_path, count, max_frames)

  poses_mm = np.stack(poses_out).astype(np.float32)     # (F, K', P, 3)
  crop_boxes = np.stack(crop_boxes).astype(np.int64)
  person_boxes = np.stack(person_boxes).astype(np.float64)
  temporal = ("streaming: LSTM state carried across all frames" if streaming else
              f"clips of {clip_length} frames, LSTM state reset per clip (as evaluation)")
  if frame_step > 1:
    temporal += (f"; a clip takes one frame in {frame_step}, each of the {frame_step} "
                 "interleaved sub-sequences on its own")
  meta = {
      "input": os.path.abspath(input_path),
      "input_kind": source.kind,
      "num_frames": int(count),
      "frame_size_hw": list(first_shape),
      "fps": fps,
      "workdir": os.path.abspath(run.workdir),
      "checkpoint_step": run.step,
      "units": "mm",
      "coordinates": COORDINATES,
      "root_joint": int(run.norm.root_joint),
      "joint_names": list(names),
      "parents": list(parents),
      "stages": stage_ids,
      "final_stage": k,
      "crop": crop_kind,
      "crop_description": (
          "person boxes from the boxes file, short side grown to a square about the centre, "
          "zero-padded outside the image" if boxes is not None else
          "no boxes given: the largest centred square of each frame"),
      "boxes_file": os.path.abspath(boxes_path) if boxes_path else None,
      "crop_boxes_units": "pixels of the input frame, [x0, y0, x1, y1], x1 - x0 = y1 - y0",
      "input_size": int(size),
      "clip_length": int(clip_length),
      "frame_step": int(frame_step),
      "clip_frame_spacing_s": spacing_s,
      "temporal": temporal,
      "streaming": bool(streaming),
      "model": config.model.to_dict(),
  }
  write_poses(output, meta, poses_mm, crop_boxes, person_boxes)
  outputs = ["poses.npz", "poses.json"] + ([os.path.basename(writer.path)] if writer else [])
  logging.info("Wrote %s for %d frames to %s (crop: %s, checkpoint step %d)",
               ", ".join(outputs), count, output, crop_kind, run.step)
  meta["outputs"] = [os.path.join(output, o) for o in outputs]
  return meta


def write_poses(output: str, meta: dict, poses_mm: np.ndarray, crop_boxes: np.ndarray,
                 person_boxes: np.ndarray) -> None:
  """poses.npz (arrays) and poses.json (metadata, then per frame: crop box, stage poses).

  poses_mm: (F, K', P, 3) float32 root-relative mm; crop_boxes (F, 4) int pixels;
  person_boxes (F, 4) float pixels (NaN without boxes).
  """
  stages = meta["stages"]
  np.savez(os.path.join(output, "poses.npz"), poses_mm=poses_mm,
           stages=np.asarray(stages, np.int32), crop_boxes=crop_boxes,
           person_boxes=person_boxes, frame_index=np.arange(len(poses_mm), dtype=np.int64),
           joint_names=np.asarray(meta["joint_names"]),
           parents=np.asarray(meta["parents"], np.int32),
           checkpoint_step=np.int64(meta["checkpoint_step"]))
  frames = [{
      "frame": i,
      "crop_box": crop_boxes[i].tolist(),
      "poses_mm": {f"stage_{s}": np.round(poses_mm[i, j].astype(np.float64), 2).tolist()
                   for j, s in enumerate(stages)},
  } for i in range(len(poses_mm))]
  with open(os.path.join(output, "poses.json"), "w") as f:
    json.dump({"metadata": meta, "frames": frames}, f)


class ClipRunner:
  """Runs the model on one clip of crops at a time, as evaluation does or streaming.

  Per-clip (evaluation): every clip starts from zero LSTM state. Streaming: the state at
  the end of a clip starts the next clip of the same sub-sequence (`sub_sequences`
  interleaved ones, each with its own state). A short last clip is padded by repeating its
  final frame (evaluation's padding); the padded frames' outputs are dropped.
  """

  def __init__(self, run: inference.Run, streaming: bool, sub_sequences: int = 1):
    self.clip_length, self.params = run.config.clip_length, run.params
    self.streaming = streaming
    model, norm = run.model, run.norm
    if streaming:
      self._step = jax.jit(streaming_lib.make_stream_step(model, norm))
      zero = poses.zero_carries(model, run.params, 1, run.config.model.input_size)
      self._carries = [zero] * sub_sequences
    else:
      self._step = jax.jit(poses.make_forward_mm(model, norm))

  def __call__(self, cuts: np.ndarray, sub: int = 0) -> np.ndarray:
    """(n, S, S, 3) uint8, n <= clip_length, of sub-sequence `sub` -> (K, n, P, 3) float32
    root-relative mm."""
    n = len(cuts)
    clip = np.concatenate([cuts, np.repeat(cuts[-1:], self.clip_length - n, axis=0)])
    if self.streaming:
      out, self._carries[sub] = self._step(self.params, self._carries[sub], clip[None])
    else:
      out = self._step(self.params, clip[None])
    return np.asarray(out)[:, 0, :n]
