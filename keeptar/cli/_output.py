"""What every command shares, without typer: output, errors, exit codes, progress.

Kept free of typer so that a command with a start-up target can run before typer
is imported (see :mod:`keeptar.cli`); :mod:`keeptar.cli._app` builds on it.
"""

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from keeptar.errors import KeeptarError, cli_message

__all__ = [
    "BROKEN_PIPE",
    "INTERNAL_ERROR",
    "batch_progress_reporter",
    "discard_stdout",
    "echo",
    "emit_json",
    "fail",
    "progress_reporter",
    "quiet_broken_stdout",
    "reporting_errors",
    "run_guarded",
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
def quiet_broken_stdout() -> Iterator[None]:
    """Exit with :data:`BROKEN_PIPE`, silently, if stdout's reader has gone away."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
        raise SystemExit(BROKEN_PIPE) from None


def fail(message: str, code: int) -> SystemExit:
    """Print ``keeptar: error: <message>`` on stderr and return the exit to raise."""
    first_line = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write(f"keeptar: error: {first_line}\n")
    sys.stderr.flush()
    return SystemExit(code)


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
        print(text, flush=True)
        return
    data = (text + "\n").encode(sys.stdout.encoding or "utf-8", sys.stdout.errors or "strict")
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def warn(message: str) -> None:
    """Print ``keeptar: warning: <message>`` on stderr, on one line."""
    sys.stderr.write(f"keeptar: warning: {' '.join(message.split())}\n")
    sys.stderr.flush()


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


def run_guarded(command: Callable[[], object]) -> None:
    """Run *command*, turning Ctrl-C outside a command and any bug into one stderr line.

    A bug exits :data:`INTERNAL_ERROR` with its (scrubbed) message, or raises
    with a traceback when ``KEEPTAR_DEBUG`` is set.
    """
    try:
        command()
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
