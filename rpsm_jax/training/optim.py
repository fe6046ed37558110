"""Optimisers and learning-rate schedules from `config.optimizer`."""

import jax
import optax

OPTIMIZERS = ("adam_l2", "adamw", "adam")
SCHEDULES = ("constant", "warmup_cosine")


def learning_rate_schedule(opt_config, num_steps: int) -> optax.Schedule:
  lr = opt_config.learning_rate
  if opt_config.schedule == "constant":
    if opt_config.warmup_steps:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, lr, opt_config.warmup_steps),
           optax.constant_schedule(lr)], [opt_config.warmup_steps])
    return optax.constant_schedule(lr)
  if opt_config.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, opt_config.warmup_steps, max(num_steps, opt_config.warmup_steps + 1),
        end_value=lr * opt_config.end_learning_rate_factor)
  raise ValueError(f"config.optimizer.schedule must be one of {SCHEDULES}, "
                   f"got {opt_config.schedule!r}")


def create_optimizer(opt_config, num_steps: int):
  """Returns (optax transformation, schedule).

  adam_l2: Adam with weight decay added to the gradient before the moments (coupled L2, as
  the authors' code does); adamw: decoupled decay; adam: no decay. Gradients are clipped by
  global norm first when grad_clip_norm > 0.
  """
  schedule = learning_rate_schedule(opt_config, num_steps)
  wd = opt_config.weight_decay
  if opt_config.name == "adam_l2":
    core = [optax.add_decayed_weights(wd), optax.scale_by_adam(),
            optax.scale_by_learning_rate(schedule)]
  elif opt_config.name == "adamw":
    core = [optax.adamw(schedule, weight_decay=wd)]
  elif opt_config.name == "adam":
    core = [optax.adam(schedule)]
  else:
    raise ValueError(f"config.optimizer.name must be one of {OPTIMIZERS}, "
                     f"got {opt_config.name!r}")
  clip = [optax.clip_by_global_norm(opt_config.grad_clip_norm)] if (
      opt_config.grad_clip_norm > 0) else []
  factor = opt_config.get("trunk_learning_rate_factor", 1.0)
  scale = [scale_trunk_updates(factor)] if factor != 1.0 else []
  return optax.chain(*clip, *core, *scale), schedule


def scale_trunk_updates(factor: float) -> optax.GradientTransformation:
  """Multiplies the updates under the top-level key 'trunk' by `factor`; stateless."""
  def update(updates, state, params=None):
    del params
    return {k: (jax.tree_util.tree_map(lambda u: u * factor, v) if k == "trunk" else v)
            for k, v in updates.items()}, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
