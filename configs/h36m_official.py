"""The authors' released Lua/Torch code: official feature adaption, Adam lr 1e-4.

Their code trains on one clip per step with a constant learning rate and coupled L2 decay.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.adaption = "official"
  config.optimizer.name = "adam_l2"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.weight_decay = 1e-4
  config.batch_size = 1
  return config
