"""Checks a config for impossible values before anything is built or compiled.

Unknown keys and wrong types are already refused by ml_collections (locked configs with
typed fields); this catches values and combinations, naming the field at fault.
"""

from rpsm_jax.cpu import convolution
from rpsm_jax.cpu import winograd
from rpsm_jax.models.adaption import VARIANTS
from rpsm_jax.models.layers import INITS
from rpsm_jax.models.recurrent import TEMPORAL
from rpsm_jax.parallel import PARALLELISMS
from rpsm_jax.training.optim import OPTIMIZERS, SCHEDULES

_DTYPES = ("float32", "bfloat16")
_NONFINITE = ("stop", "skip")


def check(config, num_devices: int = 1) -> None:
  """Raises ValueError naming every bad field of `config`.

  `num_devices`: devices the global batch is split over (all hosts' devices).
  """
  m = config.model
  problems = []

  def need(ok, message):
    if not ok:
      problems.append(message)

  need(m.num_stages >= 1, f"config.model.num_stages must be >= 1, got {m.num_stages}")
  need(m.num_joints >= 1, f"config.model.num_joints must be >= 1, got {m.num_joints}")
  need(m.input_size >= 32, f"config.model.input_size must be >= 32, got {m.input_size}")
  need(m.width > 0, f"config.model.width must be > 0, got {m.width}")
  need(m.adaption in VARIANTS, f"config.model.adaption must be one of {VARIANTS}, "
       f"got {m.adaption!r}")
  need(m.temporal in TEMPORAL, f"config.model.temporal must be one of {TEMPORAL}, "
       f"got {m.temporal!r}")
  need(m.initializer in INITS, f"config.model.initializer must be one of {INITS}, "
       f"got {m.initializer!r}")
  need(m.conv_algorithm in convolution.ALGORITHMS, "config.model.conv_algorithm must be one "
       f"of {convolution.ALGORITHMS}, got {m.conv_algorithm!r}")
  need(m.winograd_tile in (0,) + winograd.TILES, "config.model.winograd_tile must be 0 "
       f"(auto) or one of {winograd.TILES}, got {m.winograd_tile!r}")
  need(m.dtype in _DTYPES, f"config.model.dtype must be one of {_DTYPES}, got {m.dtype!r}")
  need(min(m.lstm_units, m.adaption_units) >= 1, "config.model.lstm_units and "
       "adaption_units must be >= 1")
  need(config.clip_length >= 1, f"config.clip_length must be >= 1, got {config.clip_length}")
  need(config.frame_step >= 1, f"config.frame_step must be >= 1, got {config.frame_step}")
  need(config.clip_stride >= 1, f"config.clip_stride must be >= 1, got {config.clip_stride}")
  weights = tuple(config.loss_stage_weights)
  need(not weights or len(weights) == m.num_stages,
       f"config.loss_stage_weights has {len(weights)} entries for {m.num_stages} stages")
  a = config.augment
  need(0 < a.scale_min <= a.scale_max, f"config.augment.scale_min/scale_max must satisfy "
       f"0 < min <= max, got {a.scale_min}, {a.scale_max}")
  need(0 <= a.per_clip_probability <= 1, "config.augment.per_clip_probability must be in "
       "[0, 1]")
  o = config.optimizer
  need(o.name in OPTIMIZERS, f"config.optimizer.name must be one of {OPTIMIZERS}, "
       f"got {o.name!r}")
  need(o.schedule in SCHEDULES, f"config.optimizer.schedule must be one of {SCHEDULES}, "
       f"got {o.schedule!r}")
  need(o.learning_rate > 0, "config.optimizer.learning_rate must be > 0")
  need(o.get("trunk_learning_rate_factor", 1.0) > 0, "config.optimizer."
       "trunk_learning_rate_factor must be > 0 (config.model.freeze_trunk freezes), got "
       f"{o.get('trunk_learning_rate_factor')}")
  need(config.get("trunk_cache_copies", 0) >= 0, "config.trunk_cache_copies must be >= 0 "
       f"(0: no cache), got {config.get('trunk_cache_copies')}")
  need(config.get("trunk_cache_copies", 0) <= 1 or config.augment.enabled,
       f"config.trunk_cache_copies={config.get('trunk_cache_copies')} with "
       "config.augment.enabled=False would cache identical copies: use 1")
  need(config.batch_size >= 1, f"config.batch_size must be >= 1, got {config.batch_size}")
  need(config.batch_size % num_devices == 0, f"config.batch_size={config.batch_size} "
       f"does not split over {num_devices} devices")
  need(config.eval_batch_size >= 1, "config.eval_batch_size must be >= 1")
  need(config.eval_batch_size % num_devices == 0, f"config.eval_batch_size="
       f"{config.eval_batch_size} does not split over {num_devices} devices")
  need(config.get("parallelism", "global") in PARALLELISMS, f"config.parallelism must be "
       f"one of {PARALLELISMS}, got {config.get('parallelism')!r}")
  need(config.num_train_steps >= 1, "config.num_train_steps must be >= 1")
  for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                "keep_checkpoints"):
    need(config[field] >= 1, f"config.{field} must be >= 1, got {config[field]}")
  need(config.get("max_update_ratio", 0.0) >= 0, "config.max_update_ratio must be >= 0 "
       f"(0: no bound), got {config.get('max_update_ratio')}")
  need(config.nonfinite_policy in _NONFINITE, f"config.nonfinite_policy must be one of "
       f"{_NONFINITE}, got {config.nonfinite_policy!r}")
  if problems:
    raise ValueError("invalid config: " + "; ".join(problems))
