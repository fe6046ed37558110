"""The command line of predict: flags, `main`, `run` (`python -m rpsm_jax.predict`)."""

from absl import app
from absl import flags
from absl import logging

from rpsm_jax import command_line
from rpsm_jax import logs
from rpsm_jax import workdir
from rpsm_jax.apps import inference
from rpsm_jax.apps.predict import prediction
from rpsm_jax.apps.predict.frames import InputError

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  for name in ("workdir", "input", "output"):
    if not FLAGS[name].value:
      raise app.UsageError(f"--{name} is required")
  logs.quiet_library_logs()
  try:
    run = inference.load_run(FLAGS.workdir, FLAGS.checkpoint_step, best=FLAGS.best)
    logging.info("Loaded %s at checkpoint step %d", FLAGS.workdir, run.step)
    prediction.predict(run, FLAGS.input, FLAGS.output, boxes_path=FLAGS.boxes,
                       stages=FLAGS.stages, max_frames=FLAGS.max_frames,
                       streaming=FLAGS.streaming, animation=FLAGS.animation, fps=FLAGS.fps,
                       panel_size=FLAGS.panel_size, frame_step=FLAGS.frame_step)
  except (InputError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from e


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so that importing this
  module next to other command lines (main, export, benchmark) cannot clash."""
  flags.DEFINE_string("workdir", None, "A training workdir ("
                      f"{workdir.CONFIG}, {workdir.NORMALIZATION}, {workdir.CHECKPOINTS}/).")
  flags.DEFINE_string("input", None, "A video file or a folder of image frames.")
  flags.DEFINE_string("output", None, "Directory for poses.npz, poses.json and the "
                      "animation.")
  flags.DEFINE_string("boxes", None, "Per-frame person boxes [x0, y0, x1, y1] in pixels "
                      "(.json, .csv or .npy; see the module doc). Default: a centred "
                      "square.")
  flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step to load (default: latest).")
  flags.DEFINE_bool("best", False, "Load the best checkpoint (lowest evaluation MPJPE).")
  flags.DEFINE_enum("stages", "all", ("all", "last"),
                    "Which stages' poses to write and draw.")
  flags.DEFINE_integer("max_frames", None, "Process at most this many frames.")
  flags.DEFINE_bool("streaming", False, "Carry the LSTM state across clips instead of "
                    "resetting it per clip as evaluation does.")
  flags.DEFINE_enum("animation", "mp4", ("mp4", "gif", "none"), "Animation format.")
  flags.DEFINE_float("fps", None, "Frame rate of the animation (default: the video's, or "
                     "10 for a folder of frames).")
  flags.DEFINE_integer("panel_size", 256, "Height of the animation in pixels.")
  flags.DEFINE_integer("frame_step", 1, "Input frames between consecutive frames of a "
                       "clip. Match the model's training spacing: configs/h36m.py and "
                       "configs/synthetic.py space clip frames 0.5 s apart, so 12 or 13 "
                       "for a 25 fps video. The interleaved sub-sequences run as clips of "
                       "their own, as evaluation does.")


def run():
  """The command line: `python -m rpsm_jax.predict`."""
  command_line.run_app(main, define_flags, allocator=True)
