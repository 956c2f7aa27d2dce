"""``keeptar load``: store an image archive in Keep and register it."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from keeptar._source_kind import SourceKind
from keeptar.cli._app import (
    BackendOption,
    JsonOption,
    ProgressOption,
    app,
    echo,
    emit_json,
    progress_reporter,
    reporting_errors,
)


@app.command("load")
def load_command(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A .tar file (plain or gzip/zstd/xz/bzip2), - for standard input, an "
            "arv-mount path, a collection PDH or UUID, or with --from docker an image name.",
            show_default=False,
        ),
    ] = None,
    from_: Annotated[
        SourceKind | None,
        typer.Option("--from", help="What SOURCE is [default: worked out from SOURCE]."),
    ] = None,
    project_uuid: Annotated[
        str | None,
        typer.Option("--project-uuid", help="Project to store the image in [default: home]."),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="REPO[:TAG] to register [default: the archive's tags]."),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", help="Image to load from a multi-image archive (ID or REPO:TAG)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Collection name [default: Docker image REPO:TAG HASH12]."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", "-f", help="Upload and register again even if already stored."),
    ] = False,
    force_image_format: Annotated[
        bool,
        typer.Option(
            "--force-image-format", help="Store an image whose format the cluster does not accept."
        ),
    ] = False,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    progress: ProgressOption = None,
) -> None:
    """Store a Docker image in Keep in one pass and register it as arv-keepdocker does.

    Prints the collection UUID.  Loading an image that is already stored reuses it:
    no new upload, collection or links.  Nothing is left registered if it fails.
    """
    from keeptar.backends import open_backend
    from keeptar.load import load_image

    with reporting_errors():
        store = open_backend(backend, quiet=True)
        total = os.path.getsize(source) if source and os.path.isfile(source) else None
        with progress_reporter(progress, total, "load") as report:
            result = load_image(
                store,
                source,
                source_kind=from_,
                project_uuid=project_uuid,
                tag=tag,
                image=image,
                name=name,
                force=force,
                force_image_format=force_image_format,
                progress=report,
            )
    if as_json:
        emit_json(result.to_json())
    else:
        echo(result.uuid)
