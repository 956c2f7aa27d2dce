"""The typer application: the root command and the options that commands share.

Output, errors and progress, which need no typer, are in :mod:`keeptar.cli._output`.
"""

# No `from __future__ import annotations`: typer reads the root callback's annotations,
# and as strings each would be compiled again on every run (start-up, issue 8).
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from keeptar.cli._coerce import light_coercion
from keeptar.cli._output import quiet_broken_stdout, run_guarded

__all__ = [
    "BackendOption",
    "JsonOption",
    "ProgressOption",
    "VersionOption",
    "app",
    "main",
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


class _KeeptarGroup(TyperGroup):
    """The root command: a closed stdout ends any command quietly, and start-up is short.

    typer would catch the BrokenPipeError itself and exit 1, like any other error;
    catching it here first gives every command, human or ``--json``, one status.
    Options of plain types are converted without pydantic (see :mod:`keeptar.cli._coerce`).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: a click Context
        light_coercion(self, ctx)
        with quiet_broken_stdout():  # eager options print here: --help, --version
            return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        light_coercion(command, ctx)
        return command

    def invoke(self, ctx: Any) -> Any:
        with quiet_broken_stdout():
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


def main() -> None:
    """Run the typer application (its commands registered by :mod:`keeptar.cli`)."""
    run_guarded(app)
