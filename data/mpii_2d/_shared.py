"""h36m_clips's worker pool and crops, however this package was imported.

`python -m data.mpii_2d` and `tfds build data/mpii_2d` import this package
as `mpii_2d`, with data/ on sys.path; the training code and pytest import it as
`data.mpii_2d`, with the repository root on sys.path. Either way the sibling
package is reachable under one of the two names.
"""

# pylint: disable=g-import-not-at-top,unused-import
try:
  from data.h36m_clips import crops
  from data.h36m_clips import pool
except ImportError:
  from h36m_clips import crops
  from h36m_clips import pool
