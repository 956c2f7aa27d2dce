"""``keeptar load``: store an image archive in Keep and register it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from keeptar.backends import Backend

from keeptar._source_kind import SourceKind
from keeptar.cli._app import BackendOption, JsonOption, ProgressOption, VersionOption, app
from keeptar.cli._output import (
    batch_progress_reporter,
    echo,
    emit_json,
    progress_reporter,
    reporting_errors,
    warn,
)
from keeptar.errors import UsageError


@app.command("load")
def load_command(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A .tar file (plain or gzip/zstd/xz/bzip2) or named pipe, - for standard "
            "input, an arv-mount path, a collection PDH or UUID, or with --from docker an "
            "image name.",
            show_default=False,
        ),
    ] = None,
    from_: Annotated[
        SourceKind | None,
        typer.Option("--from", help="What SOURCE is [default: worked out from SOURCE]."),
    ] = None,
    project_uuid: Annotated[
        str | None,
        typer.Option(
            "--project-uuid",
            help="Project to store the image in; 'source' = the project holding a collection "
            "SOURCE [default: home].",
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            help="REPO[:TAG] to register, exactly as typed (TAG defaults to latest) "
            "[default: the archive's tags, as written].",
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="Image to load from a multi-image archive (ID or REPO:TAG); only it is stored.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Collection name [default: Docker image REPO:TAG HASH12]."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            "-f",
            help="Register a new collection even if already stored, as arv-keepdocker -f "
            "(uploading again, except from a collection or arv-mount path, whose blocks "
            "are reused).",
        ),
    ] = False,
    force_image_format: Annotated[
        bool,
        typer.Option(
            "--force-image-format", help="Store an image whose format the cluster does not accept."
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="On Arvados, record each block stored from a file in "
            "~/.cache/keeptar/resume/ so that a re-run with --resume after a failure or "
            "kill uploads only what is missing, as arv-put. Off by default: no cache on disk.",
        ),
    ] = False,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    version: VersionOption = False,
    progress: ProgressOption = None,
    batch_progress: Annotated[
        bool,
        typer.Option(
            "--batch-progress",
            help="Machine-readable progress lines on stderr, as arv-put writes them: "
            "'PROGRAM PID: BYTES written TOTAL total' (TOTAL -1 when unknown).",
        ),
    ] = False,
    silent: Annotated[
        bool,
        typer.Option("--silent", help="Nothing on stderr but errors (no progress, no warnings)."),
    ] = False,
    retries: Annotated[
        int | None,
        typer.Option(
            "--retries",
            min=0,
            help="Retries for each API and Keep request [default: KEEPTAR_RETRIES, else 5].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Store a Docker image in Keep in one pass and register it as arv-keepdocker does.

    Prints the collection UUID.  Loading an image that is already stored reuses it:
    no new upload, collection or links.  Nothing is left registered if it fails.

    What is stored is what a compute node can load: an OCI-only archive gets a
    manifest.json appended (Docker 25+'s layout), and from a multi-image archive only
    the chosen image is kept; both reuse the uploaded blocks plus one small block.
    Names are registered exactly as given (--tag, or the archive's RepoTags);
    a RepoTag that Docker or Arvados would refuse is skipped with a warning.
    """
    from keeptar.backends import open_backend
    from keeptar.load import load_image

    with reporting_errors():
        if batch_progress and progress:
            raise UsageError("--progress and --batch-progress cannot be used together")
        if source is not None and from_ is None:
            _refuse_stored_image(source)
        store = open_backend(backend, quiet=True, retries=retries)
        if project_uuid == "source":
            project_uuid = _source_project(store, source, from_)
        total = os.path.getsize(source) if source and os.path.isfile(source) else None
        reporter = (
            batch_progress_reporter(total)
            if batch_progress and not silent
            else progress_reporter(False if silent or batch_progress else progress, total, "load")
        )
        with reporter as report:
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
                warn=None if silent else warn,
                resume=resume,
            )
    if as_json:
        emit_json(result.to_json())
    else:
        echo(result.uuid)


def _source_project(store: Backend, source: str | None, from_: SourceKind | None) -> str:
    """``--project-uuid source``: the project that holds the collection SOURCE."""
    from keeptar.load import detect_source

    kind, value = detect_source(source, from_)
    if kind is not SourceKind.COLLECTION:
        raise UsageError("--project-uuid source needs a collection SOURCE (a PDH or UUID)")
    return str(store.get_collection(value)["owner_uuid"])


def _refuse_stored_image(source: str) -> None:
    """A SOURCE that names a stored image is not loaded: say which command does what."""
    from keeptar.cli._source import SourceArg, classify_source

    if classify_source(source) is SourceArg.IMAGE:
        raise UsageError(
            f"{source!r} is not a file or a collection: to name a stored image use "
            "keeptar tag, to copy one into a project keeptar push, and to load an image "
            "from the local Docker daemon --from docker"
        )
