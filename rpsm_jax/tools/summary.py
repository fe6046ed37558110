"""`--mode=summary`: parameters per module and per stage, forward GFLOPs per frame."""

import collections
import re

import jax
import numpy as np

from rpsm_jax import model_factory
from rpsm_jax import poses

# Parameter-tree prefixes -> (module, stage). "shared" = used by every stage.
_NAME = re.compile(r"stage(\d+)_(pose2d|adaption|recurrent)$")


def _module_and_stage(top: str) -> tuple[str, str]:
  if top == "trunk":
    return "Pose2DTrunk", "shared"
  if top == "shared_pose2d":
    return "StagePose2D", "shared"
  match = _NAME.match(top)
  if not match:
    raise ValueError(f"unexpected parameter group {top!r}")
  module = {"pose2d": "StagePose2D", "adaption": "FeatureAdaption",
            "recurrent": "PoseRecurrent3D"}[match.group(2)]
  return module, f"stage{match.group(1)}"


def abstract_variables(model, config, batch: int = 1):
  """Shapes of the model's variables and of its dummy input (poses.dummy_frames):
  (variables, frames (batch, T, S, S, 3) float32), as jax.ShapeDtypeStructs."""
  frames = jax.eval_shape(lambda: poses.dummy_frames(config.clip_length,
                                                     config.model.input_size, batch))
  return jax.eval_shape(model.init, jax.random.key(0), frames), frames


def count_params(params) -> dict:
  """Returns {'total': n, 'by_module': {...}, 'by_stage': {...}, 'by_group': {...}}."""
  by_module, by_stage, by_group = (collections.Counter() for _ in range(3))
  for top, subtree in params.items():
    n = int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(subtree)))
    module, stage = _module_and_stage(top)
    by_module[module] += n
    by_stage[stage] += n
    by_group[top] = n
  return {"total": sum(by_group.values()), "by_module": dict(by_module),
          "by_stage": dict(by_stage), "by_group": dict(by_group)}


def xla_flops(computation) -> float:
  """FLOPs of a jax `Lowered` (unoptimised HLO) or `Compiled` computation, from XLA's
  cost analysis."""
  cost = computation.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
    cost = cost[0]
  return float(cost["flops"])


def forward_flops_per_frame(model, config, batch: int = 1, optimized: bool = True) -> float:
  """Forward FLOPs per frame from XLA's cost analysis of the forward pass.

  Model FLOPs: counted with direct convolutions, whatever config.model.conv_algorithm
  runs (Winograd layers do fewer multiplications for the same result).

  optimized: count the compiled HLO (what --mode=summary prints). False counts the
  unoptimised HLO, without compiling: on CPUs within 0.01-0.03% of the compiled count,
  and on GPUs the only one that includes convolutions, whose compiler turns them into
  library calls it no longer counts (the benchmark's count, on any backend).
  """
  variables, frames = abstract_variables(model, config, batch)
  lowered = jax.jit(model.clone(conv=None).apply).lower(variables, frames)
  return xla_flops(lowered.compile() if optimized else lowered) / (batch * config.clip_length)


def summarize(config) -> dict:
  model = model_factory.create_model(config.model)
  variables, _ = abstract_variables(model, config)
  counts = count_params(variables["params"])
  counts["gflops_per_frame"] = forward_flops_per_frame(model, config) / 1e9
  return counts


def print_summary(config) -> dict:
  """Prints the summary; the last lines are `total_params N` and `gflops_per_frame X`."""
  s = summarize(config)
  m = config.model
  print(f"RPSM K={m.num_stages} P={m.num_joints} input={m.input_size} width={m.width} "
        f"adaption={m.adaption} temporal={m.temporal} share_2d={m.share_2d} "
        f"dtype={m.dtype} clip_length={config.clip_length}")
  for title, key in (("parameter group", "by_group"), ("module", "by_module"),
                     ("stage", "by_stage")):
    print(f"\n{'params by ' + title:<28}{'params':>14}")
    for name, n in s[key].items():
      print(f"{name:<28}{n:>14,}")
  print(f"\ntotal_params {s['total']}")
  print(f"gflops_per_frame {s['gflops_per_frame']:.3f}")
  return s
