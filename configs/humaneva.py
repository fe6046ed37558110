"""RPSM on HumanEva-I (paper Table 3): 14 joints, Walking / Jogging / Boxing, S1-S3.

Built with `python -m data.humaneva_clips --config=crop368_step6 --manual_dir=...`
(every 6th frame of the 60 Hz videos, i.e. 10 fps), so clip frames 5 stored frames apart
are 0.5 s apart, as the authors spaced Human3.6M clips.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = "humaneva_clips"
  config.dataset.builder_config = "crop368_step6"
  # HumanEva's 14 joints have no pelvis; targets are relative to the neck (joint 13, the
  # root of rpsm_jax.joints.HUMANEVA_PARENTS). Peers align on the pelvis (15 joints), so
  # compare MPJPE with the paper's Table 3 with that in mind.
  config.dataset.root_joint = 13
  config.model.num_joints = 14
  config.frame_step = 5
  return config
