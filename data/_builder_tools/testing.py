"""Helpers for the builders' tests."""

import os

import tensorflow_datasets as tfds


def prepare(builder: tfds.core.DatasetBuilder, manual_dir,
            unset_env: str | None = None) -> None:
  """Builds from `manual_dir`, with $unset_env (if given) unset meanwhile.

  Unsetting a builder's worker variable makes the build use the config's num_workers.
  """
  old = os.environ.pop(unset_env, None) if unset_env else None
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  finally:
    if old is not None:
      os.environ[unset_env] = old
