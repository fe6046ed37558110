"""What the dataset builders in data/ share: the build command, TFDS workarounds, the
per-frame schema, worker processes, crops and videos.

A builder package imports it in one of two ways. The training code and pytest import
builders as `data.<name>`, with the repository root on sys.path: `from data._builder_tools
import ...`. `tfds build data/<name>` (and `python -m data.<name>`, which runs it) imports
the builder as `<name>`, with data/ on sys.path: there `data` may not be importable, and
`from _builder_tools import ...` finds this package instead. Hence, in each builder,

  try:
    from data._builder_tools import pool
  except ImportError:  # Imported by `tfds build` with data/, not the repository, on sys.path.
    from _builder_tools import pool

Everything specific to one dataset stays in its own package.
"""
