"""`--mode=pretrain2d`: the shared 2D trunk pretrained on MPII joint heatmaps.

The paper pretrains the shared layers on MPII with an extra convolution producing joint
heatmaps (the CPM recipe). Here: Pose2DTrunk + a 1x1 convolution to P heatmaps at the
trunk's resolution (S/8), Gaussian targets (rpsm_jax.training.heatmaps), squared error over the
annotated joints. The 2D dataset is either a 2D one (data/mpii_2d: `joints_2d`, `visible`)
or the frames of a 3D clip dataset (synthetic_clips, h36m_clips: `pose_2d`, every joint
labelled), each frame one training image: `config.pretrain2d.dataset.name=""` takes
config.dataset as it is (name, builder config, data_dir, splits). Checkpoints go to <workdir>/checkpoints like a 3D run's, so a 3D config
starts from them with `--config.model.trunk_init=checkpoint:<workdir>` (optionally
`--config.model.freeze_trunk=True`, as the authors froze theirs).
"""

import concurrent.futures
import json
import os
from typing import Optional

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np

from rpsm_jax import poses
from rpsm_jax import workdir as workdir_lib
from rpsm_jax.training import checkpoints
from rpsm_jax.pipeline import datasets
from rpsm_jax.training import heatmaps
from rpsm_jax.pipeline import input_pipeline
from rpsm_jax.training import metric_writers
from rpsm_jax import models
from rpsm_jax import parallel
from rpsm_jax.training import optim
from rpsm_jax.training import progress
from rpsm_jax.cpu import autotune
from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import step_check
from rpsm_jax.models.layers import Convolution
from rpsm_jax.models.layers import output_init
from rpsm_jax.models.trunk import Pose2DTrunk


class HeatmapModel(nn.Module):
  """Pose2DTrunk + 1x1 conv: (N, S, S, 3) images -> (N, S/8, S/8, num_joints) heatmaps.

  `conv`: the trunk's convolutions (model_factory's choice for config.model; None: lax's);
  parameters are the same whichever runs them.
  """
  num_joints: int = 16
  width: float = 1.0
  dtype: str = "float32"
  initializer: str = "he"
  conv: Optional[Convolution] = None

  @nn.compact
  def __call__(self, images):
    dtype = models.DTYPES[self.dtype]
    x = Pose2DTrunk(self.width, dtype, self.initializer, self.conv,
                    name="trunk")(images.astype(dtype))
    x = nn.Conv(self.num_joints, (1, 1), dtype=dtype, kernel_init=output_init,
                name="heatmap")(x)
    return x.astype(jnp.float32)


def joint_keys(features) -> tuple[str, Optional[str]]:
  """(2D joints feature, visibility feature or None) of a 2D or a 3D frame dataset."""
  if "joints_2d" in features:
    return "joints_2d", ("visible" if "visible" in features else None)
  if "pose_2d" in features:
    return "pose_2d", None
  raise ValueError(f"the 2D pretraining dataset has neither 'joints_2d' nor 'pose_2d' "
                   f"(features {sorted(features.keys())})")


class HeatmapLoader:
  """Batches of (image, heatmaps, visible) from a 2D split; batch `step` depends only on
  (seed, step). Training draws a scale in [scale_min, scale_max] per image, as the 3D
  pipeline does per frame.

  `joints_key` names the (P, 2) pixel joints of each example; without `visible_key`
  every joint counts as labelled (the frames of a 3D dataset).
  """

  def __init__(self, source, *, input_size: int, batch_size: int, seed: int,
               shuffle: bool, augment=None, sigma: float = heatmaps.SIGMA,
               joints_key: str = "joints_2d", visible_key: Optional[str] = "visible",
               max_examples: int = 0):
    self.source, self.input_size, self.batch_size = source, input_size, batch_size
    self.seed, self.shuffle, self.sigma = seed, shuffle, sigma
    self.joints_key, self.visible_key = joints_key, visible_key
    self.augment = augment if augment is not None and augment.enabled else None
    if len(source) == 0:
      raise ValueError("the 2D pretraining split is empty")
    # Evaluation on a spread subset (every n-th record) keeps the final check short.
    n = len(source)
    self.records = (np.linspace(0, n - 1, max_examples).round().astype(np.int64)
                    if max_examples and max_examples < n else np.arange(n))

  @property
  def num_batches(self) -> int:
    return -(-len(self.records) // self.batch_size)

  def batch(self, step: int) -> dict:
    n, b = len(self.records), self.batch_size
    positions = np.arange(step * b, (step + 1) * b)
    if self.shuffle:
      ids = input_pipeline.epoch_shuffle(self.seed, positions, n)
    else:
      ids = np.minimum(positions, n - 1)
    weight = (positions < n) | self.shuffle
    rng = np.random.default_rng([self.seed, step, 2])
    images, maps, visible, joints_2d = [], [], [], []
    # One batched read: much faster than one random access per image.
    examples = self.source.__getitems__([int(self.records[i]) for i in ids])
    for ex in examples:
      scale, shift = 1.0, (0.5, 0.5)
      if self.augment is not None:
        scale = rng.uniform(self.augment.scale_min, self.augment.scale_max)
        shift = tuple(rng.uniform(0.0, 1.0, 2))
      image, joints = input_pipeline.scale_and_crop(
          np.asarray(ex["image"]), np.asarray(ex[self.joints_key], np.float32),
          self.input_size, scale, shift)
      vis = (np.asarray(ex[self.visible_key], bool) if self.visible_key
             else np.ones(len(joints), bool))
      images.append(image)
      maps.append(heatmaps.heatmaps(joints, vis, self.input_size, self.sigma))
      visible.append(vis)
      joints_2d.append(joints)
    return {"image": np.stack(images), "heatmaps": np.stack(maps),
            "visible": np.stack(visible) & weight[:, None],
            "joints_2d": np.stack(joints_2d)}


def heatmap_loss(pred, target, visible):
  """Sum of squared heatmap errors over cells and annotated joints, mean over images.

  pred, target (B, G, G, P); visible (B, P)."""
  sq = jnp.sum((pred - target) ** 2, axis=(1, 2)) * visible
  return jnp.sum(sq) / pred.shape[0]


def peak_error_px(pred, joints_target, visible, stride: int = heatmaps.STRIDE):
  """Mean distance (input pixels) between each heatmap's peak cell centre and the joint.

  pred (B, G, G, P); joints_target (B, P, 2); visible (B, P). NaN without visible joints.
  """
  b, g, _, p = pred.shape
  flat = pred.reshape(b, g * g, p).argmax(axis=1)                 # (B, P)
  peak = np.stack([flat % g, flat // g], axis=-1) * stride + stride / 2
  err = np.linalg.norm(peak - joints_target, axis=-1)
  return float(err[visible].mean()) if visible.any() else float("nan")


def dataset_config(config):
  """config.pretrain2d.dataset, or config.dataset itself when that name is ""."""
  return config.pretrain2d.dataset if config.pretrain2d.dataset.name else config.dataset


def pretrain(config, workdir: str) -> dict:
  """Trains HeatmapModel on config.pretrain2d's dataset; returns validation metrics. A
  restart runs the convolutions the run chose before (<workdir>/conv_choices.json)."""
  with autotune.pinned(workdir_lib.path(workdir, workdir_lib.CONV_CHOICES)):
    return _pretrain(config, workdir)


def _pretrain(config, workdir: str) -> dict:
  pc = config.pretrain2d
  data = dataset_config(config)
  builder = datasets.prepare(data)
  joints_key, visible_key = joint_keys(builder.info.features)
  common = dict(input_size=config.model.input_size, batch_size=pc.batch_size,
                seed=config.seed, sigma=pc.sigma, joints_key=joints_key,
                visible_key=visible_key)
  train = HeatmapLoader(builder.as_data_source(split=data.train_split),
                        shuffle=True, augment=config.augment, **common)
  evaluation = HeatmapLoader(builder.as_data_source(split=data.eval_split),
                             shuffle=False, max_examples=pc.get("eval_max_examples", 0),
                             **common)
  num_joints = builder.info.features[joints_key].shape[0]
  conv = convolution.make_conv(config.model.get("conv_algorithm", "auto"),
                               config.model.get("winograd_tile", 0))
  model = HeatmapModel(num_joints, config.model.width, config.model.dtype,
                       config.model.initializer, conv)
  tx, schedule = optim.create_optimizer(pc.optimizer, pc.num_train_steps)
  size = config.model.input_size
  # Data parallel over every process's devices, as the 3D step (rpsm_jax.parallel): the
  # state replicated on the mesh (saved by every process), each batch split along it.
  mesh = parallel.create_mesh()
  if pc.batch_size % jax.device_count():
    raise ValueError(f"config.pretrain2d.batch_size={pc.batch_size} does not split over "
                     f"{jax.device_count()} devices")
  rep = parallel.replicated(mesh)

  def init(rng):
    params = model.init(rng, jnp.zeros((1, size, size, 3)))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  state = jax.jit(init, out_shardings=rep)(jax.random.key(config.seed))
  os.makedirs(workdir, exist_ok=True)
  manager = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  state = manager.restore_latest(state)
  start = int(state.step)
  writer = metric_writers.MetricWriter(workdir, just_logging=jax.process_index() > 0)

  def step(state, batch):
    def loss_fn(p):
      pred = state.apply_fn({"params": p}, poses.model_input(batch["image"]))
      return heatmap_loss(pred, batch["heatmaps"], batch["visible"])
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss
  step_fn = jax.jit(step, in_shardings=(rep, parallel.batch_sharded(mesh)),
                    out_shardings=(rep, rep), donate_argnums=0)
  rows = parallel.local_rows(pc.batch_size)

  def local_batch(step: int) -> dict:
    # Every process assembles the whole batch (a function of (seed, step) alone) and
    # keeps its rows: the same batches whatever the number of processes.
    batch = train.batch(step)
    return {k: batch[k][rows] for k in ("image", "heatmaps", "visible")}

  if step_check.applicable(config.model) and start < pc.num_train_steps:
    model, state = step_check.choose_model(
        "phase 1 (2D pretraining)", model, step_fn, state,
        parallel.global_batch(local_batch(start), mesh))
  forward = jax.jit(lambda p, image: model.apply({"params": p},
                                                 poses.model_input(image)))
  report = progress.Progress(pc.num_train_steps, start, frames_per_step=pc.batch_size)
  losses = []
  # The next batch is assembled on a host thread while the device runs this step.
  prefetch = concurrent.futures.ThreadPoolExecutor(1)
  upcoming = prefetch.submit(local_batch, start)
  try:
    for step in range(start, pc.num_train_steps):
      batch = upcoming.result()
      if step + 1 < pc.num_train_steps:
        upcoming = prefetch.submit(local_batch, step + 1)
      state, loss = step_fn(state, parallel.global_batch(batch, mesh))
      losses.append(loss)
      done = step + 1
      if done % config.log_every_steps == 0 or done == pc.num_train_steps:
        scalars = {"pretrain2d/loss": float(np.mean(jax.device_get(losses))),
                   "learning_rate": float(schedule(done - 1)), **report.rates(done)}
        writer.write_scalars(done, scalars)
        report.update(done, scalars["pretrain2d/loss"])
        losses = []
      if done % config.checkpoint_every_steps == 0:
        manager.save(done, state)
  finally:
    report.close()
    prefetch.shutdown(wait=True, cancel_futures=True)
  manager.save(pc.num_train_steps, state)
  manager.close()

  errors, weights, total_loss = [], [], 0.0
  params = parallel.gather(state.params)   # the small check runs on each host alone
  for i in range(evaluation.num_batches):
    batch = evaluation.batch(i)
    pred = np.asarray(forward(params, batch["image"]))
    total_loss += float(heatmap_loss(pred, batch["heatmaps"], batch["visible"]))
    errors.append(peak_error_px(pred, batch["joints_2d"], batch["visible"]))
    weights.append(int(batch["visible"].sum()))
  results = {"step": int(jax.device_get(state.step)),
             "val_heatmap_loss": total_loss / evaluation.num_batches,
             "val_peak_error_px": float(np.average(errors, weights=weights))
                                  if sum(weights) else None,
             "input_size": size, "num_joints": num_joints}
  writer.write_scalars(results["step"], {
      "pretrain2d/val_loss": results["val_heatmap_loss"]})
  writer.close()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "pretrain2d_results.json"), "w") as f:
      json.dump(results, f, indent=2)
  logging.info("2D pretraining done: %s", results)
  return results
