"""The main job: RPSM on the built-in synthetic dataset, sized for a laptop-class CPU.

Three stages with LSTMs as in the paper, at a reduced input size and width. The dataset
(data/synthetic_clips, config 'default') is built on first use (about a minute).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = "synthetic_clips"
  config.dataset.builder_config = "default"
  config.dataset.build_if_missing = True

  config.frame_step = 1              # synthetic frames are already 0.1 s apart

  config.model.input_size = 80       # crops stored at 128 px, fed at 80
  config.model.width = 0.25          # 16..128 channels instead of 64..512
  config.model.adaption = "official"  # keeps a 3x3 spatial map at this input size
  config.model.adaption_units = 256
  config.model.lstm_units = 256

  config.optimizer.name = "adam_l2"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.warmup_steps = 50
  config.optimizer.end_learning_rate_factor = 0.05

  config.batch_size = 8
  config.num_train_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 500      # periodic evaluations on eval_max_clips clips
  config.checkpoint_every_steps = 250
  config.eval_batch_size = 16
  config.eval_max_clips = 128
  return config
