r"""Exports a trained run's inference function as serialised StableHLO (`jax.export`).

  python -m rpsm_jax.export --workdir=<run> --output=<dir> [--checkpoint_step=N | --best]
      [--platforms=cpu,cuda,tpu]

writes <dir>/model.jax_export and <dir>/model.json. The exported function has the weights
and the normalisation statistics baked in and needs neither this package nor Flax to run:

  import jax, numpy as np
  exported = jax.export.deserialize(open("model.jax_export", "rb").read())
  poses_mm = exported.call(frames)   # frames: (B, T, S, S, 3) uint8 RGB crops

Input: B clips (any B: the batch dimension is symbolic) of T = config.clip_length frames,
each an S x S (S = config.model.input_size) RGB crop around the person (see predict.py for
the crop). Output: (K, B, T, P, 3) float32, every stage's poses in mm, root-relative
(joint 0 at 0), camera frame (x right, y down, z away from the camera); the LSTM state
starts from zero in every clip, as in evaluation. model.json lists the joints in order.
"""

import json
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging

import jax
import numpy as np

from rpsm_jax import poses
from rpsm_jax import logs
from rpsm_jax.apps import inference
from rpsm_jax import command_line

EXPORT_FILE = "model.jax_export"
SIDECAR_FILE = "model.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")

FLAGS = flags.FLAGS


def export_run(run: inference.Run, platforms: Optional[Sequence[str]] = DEFAULT_PLATFORMS,
               symbolic_batch: bool = True) -> jax.export.Exported:
  """The run's frames -> poses function, exported with its weights and statistics.

  Args:
    run: a restored run (inference.load_run).
    platforms: platforms to lower for (one module serves them all); None = the default
      backend only.
    symbolic_batch: a symbolic clip-batch dimension 'b'; False fixes it at 1.

  Returns:
    The jax.export.Exported; `.serialize()` gives the bytes.
  """
  size, clip_length = run.config.model.input_size, run.config.clip_length
  # Direct convolutions: one module serves every platform, and on GPUs/TPUs Winograd's
  # transforms (config.model.conv_algorithm on a CPU host) would only add memory traffic.
  forward = poses.make_forward_mm(run.model.clone(conv=None), run.norm)
  params = jax.device_get(run.params)   # numpy constants in the module

  def rpsm_poses_mm(frames):
    return forward(params, frames)

  batch = jax.export.symbolic_shape("b")[0] if symbolic_batch else 1
  spec = jax.ShapeDtypeStruct((batch, clip_length, size, size, 3), np.uint8)
  return jax.export.export(jax.jit(rpsm_poses_mm),
                           platforms=tuple(platforms) if platforms else None)(spec)


def sidecar(run: inference.Run, exported: jax.export.Exported) -> dict:
  """What a user of model.jax_export needs to know, as JSON."""
  config = run.config
  s, t = config.model.input_size, config.clip_length
  symbolic = not isinstance(exported.in_avals[0].shape[0], int)
  return {
      "format": "jax.export serialized StableHLO (load with jax.export.deserialize)",
      "jax_version": jax.__version__,
      "platforms": list(exported.platforms),
      "input": {
          "shape": ["B", t, s, s, 3], "dtype": "uint8",
          "batch": "symbolic" if symbolic else exported.in_avals[0].shape[0],
          "description": "B clips of clip_length RGB crops around the person (the box's "
                         "short side grown to a square about its centre, resized to "
                         "input_size x input_size)",
      },
      "output": {
          "shape": ["num_stages", "B", t, config.model.num_joints, 3], "dtype": "float32",
          "units": "mm",
          "coordinates": ("camera frame, root-relative: x right, y down, z away from the "
                          "camera; the root joint at 0"),
          "final_stage_index": config.model.num_stages - 1,
      },
      "input_size": s,
      "clip_length": t,
      "num_stages": config.model.num_stages,
      "joint_names": list(run.joint_names),
      "parents": list(run.parents),
      "root_joint": int(run.norm.root_joint),
      "temporal": f"LSTM state reset at the start of every clip of {t} frames",
      "checkpoint_step": run.step,
      "workdir": os.path.abspath(run.workdir),
      "model": config.model.to_dict(),
  }


def write_export(run: inference.Run, output: str,
                 platforms: Optional[Sequence[str]] = DEFAULT_PLATFORMS) -> dict:
  """Writes <output>/model.jax_export and <output>/model.json; returns the sidecar."""
  exported = export_run(run, platforms)
  os.makedirs(output, exist_ok=True)
  blob = exported.serialize()
  meta = sidecar(run, exported)
  for name, data, mode in ((EXPORT_FILE, bytes(blob), "wb"),
                           (SIDECAR_FILE, json.dumps(meta, indent=2), "w")):
    path = os.path.join(output, name)
    with open(path + ".tmp", mode) as f:
      f.write(data)
    os.replace(path + ".tmp", path)
  logging.info("Wrote %s (%.1f MB, platforms %s) and %s to %s", EXPORT_FILE,
               len(blob) / 1e6, ",".join(exported.platforms), SIDECAR_FILE, output)
  return meta


def define_flags() -> None:
  """Defined only when run as a program, so importing this module cannot clash with the
  flags of other command lines."""
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_string("output", None, "Directory for model.jax_export and model.json.")
  flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_bool("best", False, "Export the best checkpoint (lowest evaluation MPJPE).")
  flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS),
                    "Platforms the module is lowered for (cpu, cuda, rocm, tpu).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  for name in ("workdir", "output"):
    if not FLAGS[name].value:
      raise app.UsageError(f"--{name} is required")
  logs.quiet_library_logs()
  try:
    run = inference.load_run(FLAGS.workdir, FLAGS.checkpoint_step, best=FLAGS.best)
  except FileNotFoundError as e:
    raise SystemExit(f"error: {e}") from e
  write_export(run, FLAGS.output, FLAGS.platforms)


def run():
  """The command line: `python -m rpsm_jax.export`."""
  command_line.run_app(main, define_flags)


if __name__ == "__main__":
  run()
