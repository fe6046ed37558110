"""Ablation (paper Table 4): RPSM with 2 stages."""

from configs import default


def get_config():
  config = default.get_config()
  config.model.num_stages = 2
  return config
