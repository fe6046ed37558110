"""The paper's configuration on Human3.6M: 368x368, K=3, P=17, clips of 5, paper adaption."""

from configs import default


def get_config():
  return default.get_config()
