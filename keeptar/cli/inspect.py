"""``keeptar inspect``: describe the images in an archive without storing anything."""

# No `from __future__ import annotations`: typer reads the command's annotations, and
# as strings each would be compiled again on every run (start-up, issue 8).
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keeptar.cli._app import (
    BackendOption,
    JsonOption,
    ProgressOption,
    VersionOption,
    app,
    echo,
    emit_json,
    progress_reporter,
    reporting_errors,
)

if TYPE_CHECKING:
    from keeptar.formats import ArchiveInfo


@app.command("inspect")
def inspect_command(
    target: Annotated[
        str,
        typer.Argument(
            help="Image archive: a file path, - for standard input, or a collection PDH or UUID."
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
    """
    from keeptar.archive import inspect_collection, inspect_source
    from keeptar.streaming.sources import open_source

    with reporting_errors():
        if _is_collection(target):
            from keeptar.backends import open_backend

            store = open_backend(backend, quiet=True, read_only=True)
            info, fetched, blocks = inspect_collection(store, target, verify=verify)
            note = f"read {fetched} of {blocks} Keep blocks"
        else:
            with (
                open_source(target) as source,
                progress_reporter(progress, source.size, "inspect") as report,
            ):
                info = inspect_source(source, verify=verify, progress=report)
            note = ""
    if as_json:
        emit_json(info.to_json())
    else:
        echo(render_text(info))
    for warning in info.warnings:
        sys.stderr.write(f"keeptar: warning: {warning}\n")
    if note:
        typer.echo(note, err=True)


def _is_collection(target: str) -> bool:
    if target == "-" or Path(target).exists():
        return False
    from keeptar.keep.manifest import is_collection_ref

    return is_collection_ref(target)


def render_text(info: "ArchiveInfo") -> str:
    """Human-readable summary of *info*."""
    compression = "" if info.compression == "none" else f", {info.compression}-compressed"
    count = len(info.images)
    lines = [f"{info.format.value} archive{compression}, {count} image{'s' * (count != 1)}"]
    for image in info.images:
        lines.append("")
        lines.append(f"ID:            {image.id}")
        lines.append(f"Repo tags:     {', '.join(image.repo_tags) or '<none>'}")
        lines.append(f"Created:       {image.created or '<unknown>'}")
        lines.append(f"Platform:      {image.os or '?'}/{image.architecture or '?'}")
        lines.append(f"Config:        {image.config_path}")
        lines.append(f"Layers:        {len(image.layers)}")
        for layer in image.layers:
            lines.append(f"  {layer.diff_id or '-':<71} {layer.size:>12}  {layer.path}")
    if info.verified:
        lines.append("")
        lines.append("verified: every layer matches its diff ID")
    return "\n".join(lines)
