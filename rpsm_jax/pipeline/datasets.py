"""Finds, builds and opens the TFDS datasets of data/ (array_record, no TensorFlow)."""

import importlib
import os
import pathlib

from absl import logging
import tensorflow_datasets as tfds

# The top-level `data` package (installed with rpsm_jax) holds one TFDS builder package per
# dataset, data/<name>/<name>_dataset_builder.py (the layout `tfds new` makes).
FILE_FORMAT = "array_record"


def known_datasets() -> list[str]:
  import data  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(data.__file__).parent
  return sorted(p.name for p in root.iterdir()
                if (p / f"{p.name}_dataset_builder.py").exists())


def builder_class(name: str) -> type:
  """Imports data.<name>.<name>_dataset_builder and returns its Builder class."""
  if name not in known_datasets():
    raise ValueError(f"config.dataset.name={name!r}: no such builder package in data/; "
                     f"known datasets: {known_datasets()}")
  module = importlib.import_module(f"data.{name}.{name}_dataset_builder")
  return module.Builder


def get_builder(dataset_config) -> tfds.core.DatasetBuilder:
  """The builder for `config.dataset` (name, builder_config, data_dir)."""
  cls = builder_class(dataset_config.name)
  kwargs = {}
  if dataset_config.builder_config:
    kwargs["config"] = dataset_config.builder_config
  data_dir = dataset_config.data_dir or None
  return cls(data_dir=os.path.expanduser(data_dir) if data_dir else None,
             file_format=FILE_FORMAT, **kwargs)


def prepare(dataset_config) -> tfds.core.DatasetBuilder:
  """Returns a prepared builder, building it first when config.dataset.build_if_missing.

  TFDS writes into a temporary directory and renames it only when every split is complete,
  so an interrupted build never looks prepared and is simply rebuilt.
  """
  builder = get_builder(dataset_config)
  if builder.is_prepared():
    return builder
  # `tfds build data/<name>` needs TensorFlow in tfds 4.9.10; each builder package runs the
  # same command without it as `python -m data.<name>`.
  command = (f"python -m data.{dataset_config.name} --file_format={FILE_FORMAT}"
             + (f" --config={dataset_config.builder_config}"
                if dataset_config.builder_config else "")
             + (f" --data_dir={dataset_config.data_dir}" if dataset_config.data_dir else "")
             + (f" --manual_dir={dataset_config.manual_dir}"
                if dataset_config.manual_dir else ""))
  if not dataset_config.build_if_missing:
    raise FileNotFoundError(
        f"dataset {builder.info.full_name} is not prepared in {builder.data_dir}. Build it "
        f"with `{command}` or set --config.dataset.build_if_missing=True")
  logging.info("Building %s in %s (equivalent: %s)", builder.info.full_name,
               builder.data_dir, command)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(dataset_config.manual_dir) or None)
  builder.download_and_prepare(download_config=download_config, file_format=FILE_FORMAT)
  return builder
