"""The ``keeptar`` command line: a thin layer over the importable API.

Each command parses its options, calls the API, and renders the result as
text or ``--json`` on stdout.  Errors become one line on stderr and the exit
code of their :mod:`keeptar.errors` class; progress goes to stderr.
"""

from __future__ import annotations

from keeptar.cli import gc as _gc  # noqa: F401  (registers the command)
from keeptar.cli import images as _images  # noqa: F401  (registers the command)
from keeptar.cli import info as _info  # noqa: F401  (registers the command)
from keeptar.cli import inspect as _inspect  # noqa: F401  (registers the command)
from keeptar.cli import load as _load  # noqa: F401  (registers the command)
from keeptar.cli import tagging as _tagging  # noqa: F401  (registers tag, push, untag)
from keeptar.cli._app import app, main

__all__ = ["app", "main"]
