"""Ablation seq_1 (paper Table 4): clips of one frame, LSTM replaced by a Dense layer."""

from configs import default


def get_config():
  config = default.get_config()
  config.clip_length = 1
  config.model.temporal = "dense"
  return config
