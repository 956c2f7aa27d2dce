"""``keeptar images``: list the Docker images stored in Keep."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from keeptar.backends import Backend
    from keeptar.catalog.images import ImageListing

from keeptar.cli._app import BackendOption, JsonOption, VersionOption, app
from keeptar.cli._output import echo, emit_json, reporting_errors


@app.command("images")
def images_command(
    reference: Annotated[
        str | None,
        typer.Argument(
            help="Only this REPO[:TAG] (TAG defaults to latest; docker.io/library/x matches x), "
            "else images whose ID starts with this prefix (sha256: optional).",
            show_default=False,
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Also list images that have no name.")
    ] = False,
    project_uuid: Annotated[
        str | None, typer.Option("--project-uuid", help="Only images registered in this project.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only full image IDs, one a line.")
    ] = False,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    version: VersionOption = False,
) -> None:
    """List images, preferred first (newest image timestamp, then newest link).

    With a REPO[:TAG] that names no image, images whose ID starts with it are listed.
    """
    from keeptar.backends import open_backend
    from keeptar.catalog.images import list_images
    from keeptar.catalog.references import split_image_ref

    with reporting_errors():
        store = open_backend(backend, quiet=True, read_only=True)
        repo = tag = None
        if reference is not None:
            ref = split_image_ref(reference)
            repo, tag = ref.repo, ref.tag
        rows = list_images(
            store, repo=repo, tag=tag, project_uuid=project_uuid, include_untagged=show_all
        )
        if not rows and reference is not None:
            rows = _by_hash_prefix(store, reference, project_uuid)
    if quiet:
        for listing in rows:
            echo(listing.image_id)
        return
    if as_json:
        emit_json([row.to_json() for row in rows])
        return
    table = [("REPOSITORY", "TAG", "IMAGE ID", "COLLECTION", "CREATED")]
    table += [(r.repo, r.tag, r.short_id, r.collection, _when(r.created)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        echo("   ".join([*cells, row[4]]).rstrip())


def _when(stamp: str | None) -> str:
    if not stamp:
        return "<unknown>"
    return stamp.replace("T", " ")[:19]


def _by_hash_prefix(store: Backend, prefix: str, project_uuid: str | None) -> list[ImageListing]:
    """Rows for images whose ID starts with *prefix*, if it can be an ID prefix."""
    from keeptar.catalog.images import ImageListing
    from keeptar.catalog.search import hash_prefix_problem, search_images_by_hash

    if hash_prefix_problem(prefix) is not None:
        return []
    return [
        ImageListing(
            match.repo,
            match.tag,
            match.image_id,
            match.collection_uuid,
            match.image_timestamp or match.link_created_at,
        )
        for match in search_images_by_hash(store, prefix, project_uuid)
    ]
