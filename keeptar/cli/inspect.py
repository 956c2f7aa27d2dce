"""``keeptar inspect``: describe the images in an archive without storing anything.

The command's options and help; the work is :func:`keeptar.cli._inspect_run.run_inspect`,
which a plain command line reaches without typer (see that module).
"""

# No `from __future__ import annotations`: typer reads the command's annotations, and
# as strings each would be compiled again on every run (start-up, issue 8).

from typing import Annotated

import typer

from keeptar.cli._app import BackendOption, JsonOption, ProgressOption, VersionOption, app
from keeptar.cli._inspect_run import run_inspect


@app.command("inspect")
def inspect_command(
    target: Annotated[
        str,
        typer.Argument(
            help="Image archive: a file path, - for standard input, a collection PDH or UUID, "
            "or a stored image's REPO[:TAG] or image ID prefix."
        ),
    ] = "-",
    as_json: JsonOption = False,
    version: VersionOption = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Read every layer and check its sha256 against the config's diff IDs.",
        ),
    ] = False,
    progress: ProgressOption = None,
    backend: BackendOption = None,
) -> None:
    """Show the format, image IDs, tags, creation times and layers of an image archive.

    Reads plain or compressed (gzip, zstd, xz, bzip2) archives in one pass.
    Layer data is skipped unless --verify is given; for a collection, only the
    Keep blocks holding headers and metadata are fetched.

    A stored image (a collection, or a name or ID prefix found as `keeptar images`
    finds it) also shows its registration: the links, properties and migration
    links, whether the API server would run it, and every disagreement between
    the links, the file name and the archive (with --verify, missing blocks too).
    """
    run_inspect(target, as_json=as_json, verify=verify, progress=progress, backend=backend)
