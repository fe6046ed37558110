"""h36m_clips's worker pool and crops, however this package was imported.

`python -m data.humaneva_clips` and `tfds build data/humaneva_clips` import this package
as `humaneva_clips`, with data/ on sys.path; the training code and pytest import it as
`data.humaneva_clips`, with the repository root on sys.path. Either way the sibling
package is reachable under one of the two names.
"""

# pylint: disable=g-import-not-at-top,unused-import
try:
  from data.h36m_clips import crops
  from data.h36m_clips import pool
except ImportError:
  from h36m_clips import crops
  from h36m_clips import pool
