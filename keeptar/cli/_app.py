"""The typer application, error reporting and progress shared by every command."""

# No `from __future__ import annotations`: typer reads the root callback's annotations,
# and as strings each would be compiled again on every run (start-up, issue 8).
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from keeptar.cli._coerce import light_coercion
from keeptar.errors import KeeptarError, cli_message

__all__ = [
    "BROKEN_PIPE",
    "BackendOption",
    "JsonOption",
    "ProgressOption",
    "VersionOption",
    "app",
    "batch_progress_reporter",
    "discard_stdout",
    "echo",
    "emit_json",
    "main",
    "progress_reporter",
    "reporting_errors",
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ProgressOption = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress", help="Progress bar on stderr [default: if a terminal]."
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        envvar="KEEPTAR_BACKEND",
        help="local (the embedded store) or arvados [default: arvados if a cluster is "
        "configured, else local].",
    ),
]

#: Exit status when the reader of stdout goes away (``keeptar images | head -1``):
#: 128 + SIGPIPE, what a shell reports for a command that SIGPIPE ended.
BROKEN_PIPE = 141


def discard_stdout() -> None:
    """Point stdout at /dev/null, so that output still buffered cannot fail at exit."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def _quiet_broken_stdout() -> Iterator[None]:
    """Exit with :data:`BROKEN_PIPE`, silently, if stdout's reader has gone away."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
        raise typer.Exit(BROKEN_PIPE) from None


class _KeeptarGroup(TyperGroup):
    """The root command: a closed stdout ends any command quietly, and start-up is short.

    typer would catch the BrokenPipeError itself and exit 1, like any other error;
    catching it here first gives every command, human or ``--json``, one status.
    Options of plain types are converted without pydantic (see :mod:`keeptar.cli._coerce`).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: a click Context
        light_coercion(self, ctx)
        with _quiet_broken_stdout():  # eager options print here: --help, --version
            return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        light_coercion(command, ctx)
        return command

    def invoke(self, ctx: Any) -> Any:
        with _quiet_broken_stdout():
            return super().invoke(ctx)


app = typer.Typer(
    name="keeptar",
    cls=_KeeptarGroup,
    help=(
        "Put Docker image archives into Arvados Keep, and manage them there, "
        "without a Docker daemon.\n\n"
        "Exit codes: 0 success, 1 other error, 2 usage, 3 bad archive, "
        "4 digest mismatch, 5 backend failure, 6 not found, 7 conflict, 70 internal error, "
        "130 interrupted, 141 standard output closed early."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts contain literal [brackets]
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from keeptar import __version__

        typer.echo(f"keeptar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
) -> None:
    """Put Docker image archives into Arvados Keep without a Docker daemon."""


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
        show_default=False,
    ),
]
"""``--version``, which every command takes (as every arv-* tool does)."""


def fail(message: str, code: int) -> typer.Exit:
    """Print ``keeptar: error: <message>`` on stderr and return the Exit to raise."""
    first_line = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write(f"keeptar: error: {first_line}\n")
    sys.stderr.flush()
    return typer.Exit(code)


@contextlib.contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn keeptar errors and Ctrl-C into one stderr line and an exit code."""
    try:
        yield
    except KeeptarError as exc:
        raise fail(cli_message(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


def echo(text: str) -> None:
    """Print *text* and a newline on stdout: all of it, or raise BrokenPipeError.

    Python's buffered stdout can cut a large write to a pipe short without an
    error when the reader leaves midway (``keeptar inspect | head -1``), so the
    bytes go to the file descriptor directly, where every EPIPE is seen.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        typer.echo(text)
        return
    data = (text + "\n").encode(sys.stdout.encoding or "utf-8", sys.stdout.errors or "strict")
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def emit_json(doc: Any) -> None:
    """Print *doc* as indented JSON on stdout."""
    echo(json.dumps(doc, indent=2, sort_keys=False))


@contextlib.contextmanager
def progress_reporter(
    enabled: bool | None, total: int | None, description: str
) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback that shows bytes done on a stderr progress bar, or None.

    Args:
        enabled: True/False from ``--progress/--no-progress``; None means "if
            stderr is a terminal".
        total: bytes expected, if known (then the bar shows the rate and ETA).
        description: the bar's label.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


@contextlib.contextmanager
def batch_progress_reporter(total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield a callback that writes arv-put's ``--batch-progress`` lines on stderr.

    Each line is ``<program> <pid>: <bytes> written <total> total`` (total ``-1`` when
    unknown), as ``arvados.commands.put.machine_progress`` writes them; one line at
    most every half second while bytes move, and a last one with the final count.
    """
    program = sys.argv[0] if not sys.argv[0].endswith("__main__.py") else "keeptar"
    expected = -1 if total is None else total
    state = {"done": -1, "shown": -1, "at": 0.0}
    lock = threading.Lock()

    def show(done: int) -> None:
        sys.stderr.write(f"{program} {os.getpid()}: {done} written {expected} total\n")
        sys.stderr.flush()
        state["shown"] = done
        state["at"] = time.monotonic()

    def report(done: int) -> None:
        with lock:
            state["done"] = max(state["done"], done)
            if time.monotonic() - state["at"] >= 0.5:
                show(int(state["done"]))

    yield report
    with lock:
        if state["done"] >= 0 and state["done"] != state["shown"]:
            show(int(state["done"]))


#: Exit status for a bug in keeptar itself (sysexits.h EX_SOFTWARE).
INTERNAL_ERROR = 70


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # raised outside a command, e.g. during import
        sys.stderr.write("keeptar: error: interrupted\n")
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("KEEPTAR_DEBUG"):
            raise
        from keeptar.backends.arvados import scrub

        detail = scrub(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]
        sys.stderr.write(
            f"keeptar: internal error: {detail} (set KEEPTAR_DEBUG=1 for a traceback)\n"
        )
        raise SystemExit(INTERNAL_ERROR) from None
