r"""Frame-by-frame 3D pose for live video: `StreamingPredictor` and its benchmark.

RPSM is causal: the trunk, 2D layers and feature adaption see one frame at a time and the
per-stage LSTMs only look back. Carrying each stage's LSTM state from one frame to the next
therefore gives, frame by frame, exactly what running the model over the whole sequence as
one clip gives, with each pose available as soon as its frame is processed.

Note that evaluation (and `predict` without --streaming) resets the state every
config.clip_length frames, as the authors trained; a stream never resets unless `reset()`
is called, so its predictions after the first clip differ from the per-clip protocol.

Benchmark with random weights (no run needed):

  python -m rpsm_jax.streaming --config=configs/synthetic.py --num_frames=200

prints frames/s and per-frame latency (median, p90) of the single-frame step as JSON.
"""

import json
import time
from typing import Optional

from absl import app
from absl import flags
from ml_collections import config_flags

import jax
import jax.numpy as jnp
import numpy as np

from rpsm_jax import crops
from rpsm_jax import poses
from rpsm_jax import model_factory
from rpsm_jax.apps import inference
from rpsm_jax import command_line


def make_stream_step(model, norm: Optional[poses.Normalization] = None):
  """f(params, carries, frames uint8 (B, T, S, S, 3)) -> (poses (K, B, T, P, 3), carries).

  The model run on the next T frames of a stream from the per-stage LSTM `carries` the
  previous call returned (poses.zero_carries for a new stream). Poses are root-relative
  mm, or the model's normalised coordinates when `norm` is None.
  """
  def step(params, carries, frames):
    out, carries = model.apply({"params": params}, poses.model_input(frames),
                               carries=carries, return_carries=True)
    if norm is not None:
      out = poses.denormalize_root_relative(out, norm)
    return out, carries
  return step


class StreamingPredictor:
  """Takes frames one at a time and returns each frame's 3D pose of every stage.

  Usage:
    predictor = StreamingPredictor.from_workdir(workdir)
    for frame in frames:                 # (H, W, 3) uint8 RGB
      poses = predictor(frame, box)      # (K, P, 3) root-relative mm

  One jitted single-frame step takes the per-stage LSTM carries in and returns them, so
  there is one compilation and no Python state in the traced function.
  """

  def __init__(self, model, params, input_size: int,
               norm: Optional[poses.Normalization] = None):
    """Args:
      model: an RPSM module (model_factory.create_model).
      params: its parameters.
      input_size: the model's input side S, pixels.
      norm: statistics to un-normalise with; outputs are then root-relative mm. None
        returns the model's normalised coordinates.
    """
    self.model, self.params, self.input_size, self.norm = model, params, input_size, norm
    clip_step = make_stream_step(model, norm)

    def step(params, carries, frame):
      out, carries = clip_step(params, carries, frame[None, None])
      return out[:, 0, 0], carries                        # (K, P, 3)

    self._step = jax.jit(step)
    self.reset()

  @classmethod
  def from_workdir(cls, workdir: str, step: Optional[int] = None,
                   best: bool = False) -> "StreamingPredictor":
    """A predictor for a trained run (outputs in root-relative mm)."""
    run = inference.load_run(workdir, step, best=best)
    return cls(run.model, run.params, run.config.model.input_size, run.norm)

  def reset(self) -> None:
    """Starts a new stream: every stage's LSTM state back to zero."""
    self.carries = poses.zero_carries(self.model, self.params, 1, self.input_size)
    self.frames_seen = 0

  def crop(self, frame: np.ndarray, box=None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (S, S, 3) model input crop.

    `box` [x0, y0, x1, y1] (pixels) is grown to a square as in `predict`; without it a
    frame already S x S is used as is, any other the largest centred square of it.
    """
    s = self.input_size
    if box is None and frame.shape[:2] == (s, s):
      return np.asarray(frame, np.uint8)
    square = (crops.square_crop_box(box) if box is not None
              else crops.centre_crop_box(*frame.shape[:2]))
    return crops.crop_and_resize(np.asarray(frame, np.uint8), square, s)

  def step_async(self, frame: np.ndarray, box=None) -> jax.Array:
    """Like __call__ but returns the device array without waiting for it."""
    out, self.carries = self._step(self.params, self.carries, self.crop(frame, box))
    self.frames_seen += 1
    return out

  def __call__(self, frame: np.ndarray, box=None) -> np.ndarray:
    """Processes the next frame of the stream.

    Args:
      frame: (H, W, 3) uint8 RGB.
      box: optional person box [x0, y0, x1, y1] in the frame's pixels.

    Returns:
      (K, P, 3) float32 poses of every stage: root-relative mm, or normalised coordinates
      when the predictor has no `norm`.
    """
    return np.asarray(self.step_async(frame, box))


def random_params(model, input_size: int, seed: int = 0):
  """Random weights of the right shapes drawn with numpy: He-scaled kernels (std
  sqrt(2 / fan-in), activations keep their scale through the ReLU stack), zero biases.

  Enough to time or test the model, and much cheaper than `jax.jit(model.init)`, whose XLA
  compilation alone took 15-30 s on a 2-core CPU for the synthetic configs.
  """
  frames = jax.eval_shape(lambda: poses.dummy_frames(1, input_size))
  shapes = jax.eval_shape(model.init, jax.random.key(0), frames)["params"]
  rng = np.random.default_rng(seed)

  def draw(s):
    if len(s.shape) < 2:
      return jnp.zeros(s.shape, s.dtype)
    std = np.sqrt(2.0 / np.prod(s.shape[:-1]))
    return jnp.asarray(rng.normal(0.0, std, s.shape), s.dtype)
  return jax.tree.map(draw, shapes)


def streaming_benchmark(config, num_frames: int = 100, warmup: int = 3,
                        seed: int = 0) -> dict:
  """Measures StreamingPredictor on random weights and random S x S frames.

  Each frame's latency is the wall time of one `predictor(frame)` call: host-to-device
  copy, the jitted single-frame step and the copy of the poses back (no cropping, no video
  decoding). Compilation and `warmup` frames are excluded and reported apart.

  Args:
    config: a training config (configs/*.py); only config.model is used.
    num_frames: timed frames.
    warmup: untimed frames after compilation.
    seed: for the weights and frames.

  Returns:
    dict: frames, frames_per_s, latency_ms_{median,p90,mean,min,max}, compile_s,
    input_size, num_stages, backend, device.
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  model = model_factory.create_model(config.model)
  s = config.model.input_size
  params = random_params(model, s, seed)
  predictor = StreamingPredictor(model, params, s, norm=None)
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, (min(num_frames, 16), s, s, 3), dtype=np.uint8)
  start = time.perf_counter()
  predictor(frames[0])
  compile_s = time.perf_counter() - start
  for i in range(warmup):
    predictor(frames[i % len(frames)])
  predictor.reset()
  latencies = np.empty(num_frames)
  start = time.perf_counter()
  for i in range(num_frames):
    t0 = time.perf_counter()
    predictor(frames[i % len(frames)])
    latencies[i] = time.perf_counter() - t0
  total = time.perf_counter() - start
  ms = latencies * 1e3
  device = jax.devices()[0]
  return {
      "frames": int(num_frames),
      "frames_per_s": float(num_frames / total),
      "latency_ms_median": float(np.median(ms)),
      "latency_ms_p90": float(np.percentile(ms, 90)),
      "latency_ms_mean": float(ms.mean()),
      "latency_ms_min": float(ms.min()),
      "latency_ms_max": float(ms.max()),
      "compile_s": float(compile_s),
      "input_size": int(s),
      "num_stages": int(config.model.num_stages),
      "backend": jax.default_backend(),
      "device": getattr(device, "device_kind", str(device)),
  }


# --------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing this module cannot clash with the
  flags of other command lines."""
  config_flags.DEFINE_config_file(
      "config", None, "Model configuration (a configs/*.py file).", lock_config=True)
  flags.DEFINE_integer("num_frames", 100, "Frames to time.")
  flags.DEFINE_integer("warmup", 3, "Untimed frames after compilation.")

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/synthetic.py")
  result = streaming_benchmark(FLAGS.config, FLAGS.num_frames, FLAGS.warmup)
  print(json.dumps(result, indent=2))


def run():
  """The command line: `python -m rpsm_jax.streaming`."""
  command_line.run_app(main, define_flags, allocator=True)


if __name__ == "__main__":
  run()
