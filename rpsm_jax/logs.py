"""Log filtering for the command lines."""

import logging


class _QuietLibraries(logging.Filter):
  """Drops INFO chatter of Orbax (tens of lines per checkpoint); keeps its warnings."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  """Hides Orbax's INFO lines from the root logger's handlers."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())
