"""Checkpoints (issue 18): one manager keeps last N + best, each step written once; a
damaged newest checkpoint is skipped, never trained on; no silent fresh start."""

import glob
import json
import logging
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from rpsm_jax import workdir as workdir_lib
from rpsm_jax.training import checkpoints


def _state(value: float):
  # Random data dominates the files, so a flipped byte lands in array values.
  rng = np.random.default_rng(int(value))
  return {"params": {"w": jnp.asarray(rng.normal(size=(64, 64)).astype(np.float32)),
                     "b": jnp.full((8,), value, jnp.float32)},
          "step": jnp.asarray(int(value), jnp.int32)}


def _saved_run(workdir, steps=(3, 6, 9), metrics=None, keep=3):
  manager = checkpoints.Checkpoints(str(workdir), keep)
  for i, step in enumerate(steps):
    manager.save(step, _state(step), metric=None if metrics is None else metrics[i])
  manager.close()


def _step_dir(workdir, step):
  return os.path.join(str(workdir), "checkpoints", str(step))


def _restore_latest(workdir, allow=False):
  manager = checkpoints.Checkpoints(str(workdir), 3, allow_restart_from_scratch=allow)
  try:
    return manager.restore_latest(_state(0))
  finally:
    manager.close()


def _data_files(workdir, step):
  files = glob.glob(os.path.join(_step_dir(workdir, step), "default", "**", "d", "*"),
                    recursive=True)
  return sorted(files, key=os.path.getsize)


def test_best_survives_rotation_and_each_step_is_written_once(tmp_path, monkeypatch):
  writes = []
  original = checkpoints.ocp.CheckpointManager.save

  def counting_save(self, step, *args, **kwargs):
    writes.append(step)
    return original(self, step, *args, **kwargs)
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, "save", counting_save)
  manager = checkpoints.Checkpoints(str(tmp_path), keep=2)
  for step, metric in ((2, 50.0), (4, 10.0), (6, 30.0), (8, None), (10, 40.0)):
    manager.save(step, _state(step), metric=metric)
    manager.save(step, _state(step), metric=metric)   # a second save of a step: no-op
  manager.close()
  assert writes == [2, 4, 6, 8, 10]           # one write per step, one manager
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "4", "8"]
  manager = checkpoints.Checkpoints(str(tmp_path), keep=2)
  assert manager.best_step() == 4 and manager.best_metric() == 10.0
  best = manager.restore(_state(0), best=True)
  np.testing.assert_array_equal(best["params"]["b"], _state(4)["params"]["b"])
  manager.close()


def _delete_data(workdir, step):
  os.remove(_data_files(workdir, step)[-1])


def _truncate_data(workdir, step):
  path = _data_files(workdir, step)[-1]
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _remove_manifest(workdir, step):
  os.remove(os.path.join(_step_dir(workdir, step), "default", "manifest.ocdbt"))


def _remove_metadata(workdir, step):
  os.remove(os.path.join(_step_dir(workdir, step), "default", "_METADATA"))


def _empty_folder(workdir, step):
  path = _step_dir(workdir, step)
  shutil.rmtree(path)
  os.makedirs(path)


def _flip_bytes(workdir, step):
  path = _data_files(workdir, step)[-1]
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    middle = len(data) // 2
    for i in range(middle, middle + 4):
      data[i] ^= 0x10
    f.seek(0)
    f.write(data)


@pytest.mark.parametrize("damage", [_delete_data, _truncate_data, _remove_manifest,
                                    _remove_metadata, _empty_folder, _flip_bytes])
def test_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage, caplog):
  _saved_run(tmp_path)
  damage(tmp_path, 9)
  with caplog.at_level(logging.WARNING):
    state = _restore_latest(tmp_path)
  assert int(state["step"]) == 6                      # the newest intact one
  np.testing.assert_array_equal(state["params"]["w"], _state(6)["params"]["w"])
  warning = next(r.getMessage() for r in caplog.records
                 if "Skipping the checkpoint at step 9" in r.getMessage())
  assert os.path.join("checkpoints", "9") in warning   # names the step's files
  # Moved out of the way, so the resumed run can save step 9 again.
  assert not os.path.exists(_step_dir(tmp_path, 9))
  assert os.listdir(tmp_path / checkpoints.DAMAGED)
  manager = checkpoints.Checkpoints(str(tmp_path), 3)
  manager.save(9, _state(9))
  manager.close()
  assert int(_restore_latest(tmp_path)["step"]) == 9


def test_bit_flip_is_caught_by_the_digest(tmp_path):
  _saved_run(tmp_path, steps=(3,))
  _flip_bytes(tmp_path, 3)
  manager = checkpoints.Checkpoints(str(tmp_path), 3)
  with pytest.raises(checkpoints.CheckpointError, match="step 3"):
    manager.restore(_state(0), 3)
  manager.close()


def test_no_fresh_start_over_damaged_checkpoints_without_the_flag(tmp_path):
  _saved_run(tmp_path, steps=(3, 6), metrics=(20.0, 30.0))
  for step in (3, 6):
    _delete_data(tmp_path, step)
  with pytest.raises(checkpoints.CheckpointError, match="allow_restart_from_scratch"):
    _restore_latest(tmp_path)


def test_fresh_start_with_the_flag_keeps_the_old_best_aside(tmp_path):
  _saved_run(tmp_path, steps=(3, 6), metrics=(20.0, 30.0))
  _delete_data(tmp_path, 6)
  _remove_manifest(tmp_path, 3)
  state = _restore_latest(tmp_path, allow=True)
  assert int(state["step"]) == 0
  # Damaged steps went to checkpoints_damaged/, the rest of the folder aside.
  assert len(glob.glob(str(tmp_path / "checkpoints.before-*"))) == 1
  # The fresh run saves a "better" best: nothing of the old run is replaced.
  manager = checkpoints.Checkpoints(str(tmp_path), 3)
  manager.save(3, _state(3), metric=1.0)
  manager.close()
  damaged = sorted(os.listdir(tmp_path / checkpoints.DAMAGED))
  assert [d.split("-")[0] for d in damaged] == ["3", "6"]


def test_deleted_checkpoints_folder_is_noticed(tmp_path):
  _saved_run(tmp_path, steps=(3, 6), metrics=(20.0, 30.0))
  shutil.rmtree(tmp_path / "checkpoints")
  with pytest.raises(checkpoints.CheckpointError, match=r"steps \[3, 6\].*deleted"):
    _restore_latest(tmp_path)
  assert int(_restore_latest(tmp_path, allow=True)["step"]) == 0


def test_latest_steps_deleted_but_best_kept_resumes_from_the_best(tmp_path):
  _saved_run(tmp_path, steps=(3, 6, 9, 12), metrics=(5.0, 30.0, None, None), keep=2)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["12", "3", "9"]
  for step in (9, 12):
    shutil.rmtree(_step_dir(tmp_path, step))
  state = _restore_latest(tmp_path)
  assert int(state["step"]) == 3
  manager = checkpoints.Checkpoints(str(tmp_path), 2)
  assert manager.best_step() == 3
  manager.close()


def test_checkpoint_of_another_model_names_the_arrays_not_damage(tmp_path):
  _saved_run(tmp_path, steps=(3,))
  other = _state(0)
  other["params"]["b"] = jnp.zeros((16,), jnp.float32)
  manager = checkpoints.Checkpoints(str(tmp_path), 3)
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"\['b'\]: saved \[8\] float32, model \[16\]"):
    manager.restore_latest(other)
  manager.close()
  assert os.path.isdir(_step_dir(tmp_path, 3))    # an intact checkpoint is left alone


def test_garbage_normalization_json_names_the_file(tmp_path):
  with open(tmp_path / workdir_lib.NORMALIZATION, "w") as f:
    f.write('{"minimum": [1, 2')
  with pytest.raises(workdir_lib.RunFileError, match="normalization.json is not valid JSON"):
    workdir_lib.load_normalization(str(tmp_path))
  with open(tmp_path / workdir_lib.NORMALIZATION, "w") as f:
    json.dump({"minimum": "garbage"}, f)
  with pytest.raises(workdir_lib.RunFileError, match="normalization.json: bad or missing"):
    workdir_lib.load_normalization(str(tmp_path))
