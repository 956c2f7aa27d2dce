"""The ``keeptar`` command line: a thin layer over the importable API.

Each command parses its options, calls the API, and renders the result as
text or ``--json`` on stdout.  Errors become one line on stderr and the exit
code of their :mod:`keeptar.errors` class; progress goes to stderr.

Start-up is kept short: ``keeptar --version`` answers before typer is
imported, and each command imports what it needs (backends, the Arvados SDK,
decompressors, rich) only when it runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["app", "main"]


def _registered_app() -> typer.Typer:
    # (not named _app: importing the submodule keeptar.cli._app rebinds that name here)
    """The typer application, with every command registered."""
    from keeptar.cli import images as _images  # noqa: F401  (registers the command)
    from keeptar.cli import info as _info  # noqa: F401  (registers the command)
    from keeptar.cli import inspect as _inspect  # noqa: F401  (registers the command)
    from keeptar.cli import load as _load  # noqa: F401  (registers the command)
    from keeptar.cli._app import app

    return app


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:] == ["--version"]:
        _print_version()
        return
    _registered_app()
    from keeptar.cli._app import main as run

    run()


def _print_version() -> None:
    """``keeptar --version`` without importing typer (the same line typer's option prints)."""
    from keeptar import __version__

    try:
        sys.stdout.write(f"keeptar {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        from keeptar.cli._app import BROKEN_PIPE, discard_stdout

        discard_stdout()
        raise SystemExit(BROKEN_PIPE) from None


def __getattr__(name: str) -> object:
    if name == "app":
        return _registered_app()
    raise AttributeError(f"module 'keeptar.cli' has no attribute {name!r}")
