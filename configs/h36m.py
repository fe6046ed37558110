"""The paper's configuration on Human3.6M: 368x368, K=3, P=17, clips of 5, paper adaption.

`--mode=train` runs the paper's recipe: phase 1 pretrains the trunk plus a heatmap head on
MPII (data/mpii_2d, 368 px crops; the user's MPII release in
config.pretrain2d.dataset.manual_dir) into <workdir>/pretrain2d, phase 2 trains the 3D
model from that trunk, frozen as in the authors' released recipe. To pretrain on the
Human3.6M frames' own 2D joints instead (no MPII download):
`--config.pretrain2d.dataset.name=` (an empty name: config.dataset itself, its splits
too). `--config.pretrain2d.enabled=False`
trains from a random trunk (the paper's "no MPII pretraining" row).
"""

from configs import default


def get_config():
  config = default.get_config()
  p = config.pretrain2d
  p.enabled = True
  p.trunk = "frozen"
  p.dataset.builder_config = "crop368"
  # Like the 3D data, MPII is built from the user's release on first use.
  p.dataset.build_if_missing = True
  return config
