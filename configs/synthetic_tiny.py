"""A seconds-long smoke run on the 'tiny' synthetic dataset (used by the tests)."""

from configs import synthetic


def get_config():
  config = synthetic.get_config()
  config.dataset.builder_config = "tiny"
  config.model.input_size = 64
  config.model.width = 1 / 16
  config.model.adaption_units = 32
  config.model.lstm_units = 32
  config.clip_length = 4
  config.frame_step = 1              # its sequences have 8 frames
  config.batch_size = 4
  config.optimizer.warmup_steps = 2
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  config.eval_batch_size = 4
  config.eval_max_clips = 4
  config.pretrain2d.batch_size = 4
  config.pretrain2d.num_train_steps = 4
  config.pretrain2d.optimizer.warmup_steps = 2
  config.pretrain2d.eval_max_examples = 8
  return config
