"""``keeptar tag``, ``push`` and ``untag``: name stored images, place them in projects.

Thin commands over :mod:`keeptar.catalog` (Arvados story #9045).  Each creates
only what is missing, so running it twice changes nothing the second time.
Exit codes beyond the usual ones: 2 for an image ID prefix that matches several
images (the message lists them), 3 for a SOURCE collection that is not an
image (one ``<image id>.tar``), 6 for an unknown image or project or (untag) a
name with no links there, 7 for a project you cannot write to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keeptar.cli._app import BackendOption, JsonOption, ProgressOption, VersionOption, app
from keeptar.cli._output import echo, emit_json, progress_reporter, reporting_errors, warn

if TYPE_CHECKING:
    from keeptar.backends import Backend, Record
    from keeptar.catalog.registration import Registered

_SOURCE_PROJECT = "source"

ProjectOption = Annotated[
    str | None,
    typer.Option(
        "--project-uuid",
        help="Project to register the name in; 'source' = the project holding the source "
        "collection.",
        show_default=False,
    ),
]


def _project(value: str | None, source: Record | None, default: str | None) -> str | None:
    """The target project: as given, the source's project for 'source', else *default*."""
    from keeptar.errors import UsageError

    if value == _SOURCE_PROJECT:
        if source is None:
            raise UsageError("--project-uuid source: there is no source collection in Keep")
        return str(source["owner_uuid"])
    return value if value is not None else default


def _report(
    backend: Backend, registered: Registered, name: str, as_json: bool, extra: dict[str, Any]
) -> None:
    from keeptar.catalog.publish import image_file

    record = registered.collection
    if "manifest_text" not in record or "owner_uuid" not in record:
        record = backend.get_collection(record["uuid"])
    _, image_id = image_file(record)
    doc = {
        "collection": record["uuid"],
        "portable_data_hash": record["portable_data_hash"],
        "project_uuid": record["owner_uuid"],
        "image_id": image_id,
        "name": name,
        "created": list(registered.created),
        **extra,
    }
    if as_json:
        emit_json(doc)
        return
    what = f"{len(registered.created)} created" if registered.created else "nothing new"
    echo(
        f"{name} -> {record['uuid']} ({record['portable_data_hash']}) in "
        f"{record['owner_uuid']}: {what}"
    )


@contextlib.contextmanager
def _hint_load() -> Iterator[None]:
    """A collection that is not an image: say how to register the archive it may hold."""
    from keeptar.errors import ArchiveError

    try:
        yield
    except ArchiveError as exc:
        raise ArchiveError(f"{exc} (keeptar load COLLECTION registers an archive in it)") from None


@app.command("tag")
def tag_command(
    source: Annotated[
        str,
        typer.Argument(
            help="The image: REPO[:TAG] (TAG defaults to latest), an image ID prefix "
            "(sha256: optional), or a collection PDH or UUID holding <image id>.tar.",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    target: Annotated[
        str,
        typer.Argument(
            help="The new name, REPO[:TAG] (TAG defaults to latest).",
            metavar="REPO[:TAG]",
            show_default=False,
        ),
    ],
    project_uuid: ProjectOption = None,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    version: VersionOption = False,
) -> None:
    """Give a stored image another name [default project: where the image collection is].

    In another project the collection is first copied there by manifest (no
    bytes are uploaded).  Exit 2: ambiguous ID prefix; 3: SOURCE collection is
    not an image; 6: no such image or project; 7: project not writable.
    """
    with reporting_errors():
        from keeptar.backends import open_backend
        from keeptar.catalog.publish import ensure_image, resolve_image
        from keeptar.catalog.references import parse_image_ref
        from keeptar.cli._source import classify_source
        from keeptar.errors import UsageError

        name = str(parse_image_ref(target))
        store = open_backend(backend, quiet=True)
        if not classify_source(source).is_stored:
            raise UsageError(
                f"SOURCE {source!r} is a file, not a stored image: store it with keeptar load"
            )
        with _hint_load():
            record = resolve_image(store, source)
        project = _project(project_uuid, record, str(record["owner_uuid"]))
        registered = ensure_image(store, project, record, image_name=name)
        _report(store, registered, name, as_json, {"source": record["uuid"]})


@app.command("push")
def push_command(
    image: Annotated[
        str,
        typer.Argument(
            help="REPO[:TAG] to publish (TAG defaults to latest).",
            metavar="REPO[:TAG]",
            show_default=False,
        ),
    ],
    project_uuid: ProjectOption = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Collection (PDH or UUID) holding the image [default: the best image of "
            "that name already in Keep, else the local Docker daemon's].",
            show_default=False,
        ),
    ] = None,
    progress: ProgressOption = None,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    version: VersionOption = False,
) -> None:
    """Make a project (default: home) hold the image under REPO[:TAG].

    Bytes already in Keep are never uploaded again: a collection elsewhere is
    copied by manifest.  From the local Docker daemon, `docker save` is streamed
    into Keep as `keeptar load --from docker` does, with a progress bar.  Exit 3:
    --source is not an image; 6: no such collection or project; 7: project not
    writable.
    """
    with reporting_errors():
        from keeptar.backends import open_backend
        from keeptar.catalog.publish import ensure_image, image_file
        from keeptar.catalog.references import parse_image_ref
        from keeptar.catalog.search import search_images_by_name
        from keeptar.errors import NotFoundError

        name = str(parse_image_ref(image))
        store = open_backend(backend, quiet=True)
        record: Record | None = None
        origin = "collection"
        if source is not None:
            record = store.get_collection(source)
            with _hint_load():
                image_file(record)
        else:
            found = search_images_by_name(store, name)
            if found:
                record = store.get_collection(found[0].collection_uuid)
                origin = "keep"
        project = _project(project_uuid, record, None)
        if record is None:
            from keeptar.load import SourceKind, load_image

            origin = "docker"
            try:
                with progress_reporter(progress, None, "push") as report:
                    loaded = load_image(
                        store,
                        image,
                        source_kind=SourceKind.DOCKER,
                        project_uuid=project,
                        tag=name,
                        progress=report,
                        warn=warn,
                    )
            except NotFoundError as exc:
                raise NotFoundError(f"no image {name} in Keep, and {exc}") from None
            record = store.get_collection(loaded.uuid)
        registered = ensure_image(store, project, record, image_name=name)
        _report(store, registered, name, as_json, {"source": record["uuid"], "from": origin})


@app.command("untag")
def untag_command(
    image: Annotated[
        str,
        typer.Argument(
            help="REPO:TAG to remove (TAG defaults to latest).",
            metavar="REPO:TAG",
            show_default=False,
        ),
    ],
    project_uuid: Annotated[
        str | None,
        typer.Option("--project-uuid", help="Project whose name links to remove [default: home]."),
    ] = None,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    version: VersionOption = False,
) -> None:
    """Remove the name's docker_image_repo+tag links in a project.

    Only links named exactly REPO:TAG, owned by the project, are removed;
    collections and hash links are kept.  Exit 6: no such link (or project);
    7: project not writable.
    """
    with reporting_errors():
        from keeptar.backends import open_backend
        from keeptar.catalog.images import REPO_TAG_LINK
        from keeptar.catalog.references import parse_image_ref
        from keeptar.catalog.registration import resolve_owner
        from keeptar.errors import NotFoundError

        name = str(parse_image_ref(image))
        store = open_backend(backend, quiet=True)
        owner = resolve_owner(store, project_uuid)
        removed: list[str] = []
        with store.atomic():
            for link in list(
                store.list_links(
                    [
                        ["link_class", "=", REPO_TAG_LINK],
                        ["name", "=", name],
                        ["owner_uuid", "=", owner],
                    ],
                    select=["uuid"],
                )
            ):
                store.delete_link(link["uuid"])
                removed.append(link["uuid"])
        if not removed:
            raise NotFoundError(f"no image named {name} in project {owner}")
    if as_json:
        emit_json({"name": name, "project_uuid": owner, "removed": removed})
        return
    echo(f"removed {len(removed)} link{'s' if len(removed) != 1 else ''} naming {name}")
