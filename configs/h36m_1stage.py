"""Ablation (paper Table 4): RPSM with 1 stage."""

from configs import default


def get_config():
  config = default.get_config()
  config.model.num_stages = 1
  return config
