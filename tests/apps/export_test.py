"""export: the serialised model runs without the project's code and gives its poses."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from rpsm_jax import joints
from rpsm_jax import poses
from rpsm_jax.apps import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_LOAD_EXPORTED = textwrap.dedent("""
    import sys

    class _Refuse:  # the exported model must run without the project's code or Flax
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rpsm_jax", "flax", "configs"):
          raise ImportError("refused: " + name)

    sys.meta_path.insert(0, _Refuse())
    import jax
    import numpy as np
    with open(sys.argv[1], "rb") as f:
      exported = jax.export.deserialize(f.read())
    np.save(sys.argv[3], np.asarray(exported.call(np.load(sys.argv[2]))))
""")


def test_export_runs_without_the_model_code(trained_workdir, run, tmp_path):
  out = tmp_path / "export"
  result = subprocess.run(
      [sys.executable, "-m", "rpsm_jax.apps.export", f"--workdir={trained_workdir}",
       f"--output={out}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  meta = json.loads((out / export.SIDECAR_FILE).read_text())
  s, c = run.config.model.input_size, run.config.clip_length
  assert meta["joint_names"] == list(joints.H36M_JOINTS)
  assert meta["output"]["units"] == "mm"
  assert meta["input_size"] == s and meta["clip_length"] == c
  assert meta["input"]["batch"] == "symbolic" and meta["checkpoint_step"] == run.step
  frames = np.random.default_rng(0).integers(0, 256, (3, c, s, s, 3), dtype=np.uint8)
  np.save(tmp_path / "frames.npy", frames)
  result = subprocess.run(
      [sys.executable, "-c", _LOAD_EXPORTED, str(out / export.EXPORT_FILE),
       str(tmp_path / "frames.npy"), str(tmp_path / "poses.npy")],
      capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  exported = np.load(tmp_path / "poses.npy")
  expected = jax.jit(poses.make_forward_mm(run.model, run.norm))(run.params, frames)
  assert exported.shape == (run.config.model.num_stages, 3, c, 17, 3)
  np.testing.assert_allclose(exported, np.asarray(expected), atol=1e-3)
  np.testing.assert_array_equal(exported[..., 0, :], 0.0)
