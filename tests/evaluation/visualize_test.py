"""visualize: the evaluation figure of a trained run."""

import cv2

from configs import synthetic_tiny
from rpsm_jax.evaluation import visualize
from rpsm_jax.pipeline import input_pipeline


def test_plot_eval_clips_writes_a_figure(trained_workdir, run, tiny_data_dir, tmp_path):
  config = synthetic_tiny.get_config()
  config.dataset.data_dir = tiny_data_dir
  pipe = input_pipeline.create_pipeline(config, trained_workdir)
  out = str(tmp_path / "eval" / "clips.png")
  assert visualize.plot_eval_clips(run.model, run.params, pipe.eval, pipe.norm, out,
                                   num_clips=2, panel_size=64) == out
  figure = cv2.imread(out)
  k, t = config.model.num_stages, config.clip_length
  assert figure.shape[0] == 64 // 4 + 2 * (1 + k) * 64
  assert figure.shape[1] == 64 // 2 + t * 64
