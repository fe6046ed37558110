"""Ablation (paper Table 4): clips of 10 frames."""

from configs import default


def get_config():
  config = default.get_config()
  config.clip_length = 10
  return config
