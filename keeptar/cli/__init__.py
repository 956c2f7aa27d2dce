"""The ``keeptar`` command line: a thin layer over the importable API.

Each command parses its options, calls the API, and renders the result as
text or ``--json`` on stdout.  Errors become one line on stderr and the exit
code of their :mod:`keeptar.errors` class; progress goes to stderr.

Start-up is kept short (guarded by tests/test_startup.py): ``keeptar --version``,
and ``keeptar inspect`` with a plain command line, answer before typer is imported
(:mod:`keeptar.cli._inspect_run`); otherwise only the command that runs is registered;
each command imports what it needs (backends, the Arvados SDK, decompressors,
rich) only when it runs; and option values of plain types skip typer's pydantic
conversion (:mod:`keeptar.cli._coerce`).  A new command goes in :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["COMMANDS", "app", "main"]


#: Each command and the module that registers it.
COMMANDS = {
    "convert": "keeptar.cli.convert",
    "gc": "keeptar.cli.gc",
    "images": "keeptar.cli.images",
    "info": "keeptar.cli.info",
    "inspect": "keeptar.cli.inspect",
    "load": "keeptar.cli.load",
    "migrate19": "keeptar.cli.migrate19",
    "push": "keeptar.cli.tagging",
    "tag": "keeptar.cli.tagging",
    "untag": "keeptar.cli.tagging",
}


def _registered_app(argv: list[str] | None = None) -> typer.Typer:
    """The typer application with its commands registered.

    With *argv* naming a command first (``["inspect", …]``), only that command
    is registered: typer builds every registered command's options on each
    run, and the others are not needed.  Otherwise (``--help``, a typo to
    report) all are.
    """
    # (Not named _app: importing the submodule keeptar.cli._app rebinds that name here.)
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    for name in wanted:
        importlib.import_module(COMMANDS[name])
    from keeptar.cli._app import app

    return app


def main() -> None:
    """Console-script entry point."""
    argv = sys.argv[1:]
    if argv == ["--version"]:
        _print_version()
        return
    if argv[:1] == ["inspect"]:
        from keeptar.cli._inspect_run import plain_arguments, run_plain

        options = plain_arguments(argv[1:])
        if options is not None:
            run_plain(options)
            return
    _registered_app(argv)
    from keeptar.cli._app import main as run

    run()


def _print_version() -> None:
    """``keeptar --version`` without importing typer (the same line typer's option prints)."""
    from keeptar import __version__

    try:
        sys.stdout.write(f"keeptar {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        from keeptar.cli._output import BROKEN_PIPE, discard_stdout

        discard_stdout()
        raise SystemExit(BROKEN_PIPE) from None


def __getattr__(name: str) -> object:
    if name == "app":
        return _registered_app()
    raise AttributeError(f"module 'keeptar.cli' has no attribute {name!r}")
