"""Log filtering for the command lines."""

import logging


# Orbax warns at every save without metrics while a best_fn is set; checkpoints between
# evaluations have none by design (rpsm_jax.training.checkpoints).
_EXPECTED_ORBAX_WARNINGS = ("did not provide metrics",)


class _QuietLibraries(logging.Filter):
  """Drops INFO chatter of Orbax (tens of lines per checkpoint); keeps its warnings."""

  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno < logging.WARNING:
      return False
    return not any(w in record.getMessage() for w in _EXPECTED_ORBAX_WARNINGS)


def quiet_library_logs() -> None:
  """Hides Orbax's INFO lines from the root logger's handlers."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())
