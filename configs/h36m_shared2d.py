"""Ablation (paper Table 4): one set of 2D-module layers shared by all stages."""

from configs import default


def get_config():
  config = default.get_config()
  config.model.share_2d = True
  return config
