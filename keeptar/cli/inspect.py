"""``keeptar inspect``: describe the images in an archive without storing anything."""

# No `from __future__ import annotations`: typer reads the command's annotations, and
# as strings each would be compiled again on every run (start-up, issue 8).

import json
import sys
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
    from keeptar.catalog.inspection import StoredRegistration
    from keeptar.formats import ArchiveInfo


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
    from keeptar.archive import inspect_source
    from keeptar.cli._source import classify_source
    from keeptar.streaming.sources import open_source

    registration: StoredRegistration | None = None
    with reporting_errors():
        if classify_source(target).is_stored:
            from keeptar.archive import inspect_stored_image
            from keeptar.backends import open_backend

            store = open_backend(backend, quiet=True, read_only=True)
            found, registration, fetched, blocks = inspect_stored_image(
                store, target, verify=verify
            )
            note = f"read {fetched} of {blocks} Keep blocks"
        else:
            with (
                open_source(target) as source,
                progress_reporter(progress, source.size, "inspect") as report,
            ):
                found = inspect_source(source, verify=verify, progress=report)
            note = ""
    if as_json:
        doc = found.to_json() if found is not None else {}
        emit_json(doc if registration is None else {**doc, **registration.to_json()})
    else:
        parts = [render_text(found)] if found is not None else []
        if registration is not None:
            parts.append(render_registration(registration))
        echo("\n\n".join(parts))
    for warning in found.warnings if found is not None else ():
        sys.stderr.write(f"keeptar: warning: {warning}\n")
    if note:
        typer.echo(note, err=True)


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


def render_registration(registration: "StoredRegistration") -> str:
    """The human "Registration" block of a stored image."""
    collection = registration.collection
    lines = [
        "Registration",
        f"Collection:    {collection['uuid']} ({collection['portable_data_hash']})",
        f"Name:          {_shown(collection.get('name') or '<none>')}",
        f"Owner:         {collection.get('owner_uuid')}",
        f"Files:         {', '.join(_shown(f['path']) for f in collection['files']) or '<none>'}",
    ]
    properties = registration.properties
    lines.append(
        f"Properties:    {json.dumps(properties, sort_keys=True) if properties else '<none>'}"
    )
    links = registration.links
    lines.append(f"Links:         {len(links) or '<none>'}")
    for link in links:
        if link["link_class"] == "docker_image_migration":
            where = f"{link['tail_uuid']} -> {link['head_uuid']}"
            lines.append(f"  docker_image_migration {where}  owner {link['owner_uuid']}")
        else:
            stamp = _shown(str(link["image_timestamp"] or "<no image_timestamp>"))
            name = _shown(str(link["name"]))
            lines.append(f"  {link['link_class']:<22} {name}  owner {link['owner_uuid']}  {stamp}")
    lines.append(f"Accepted by server: {'yes' if registration.accepted_by_server else 'no'}")
    if registration.problems:
        lines.append("Problems:")
        lines.extend(f"  - {_shown(problem)}" for problem in registration.problems)
    else:
        lines.append("Problems:      none")
    return "\n".join(lines)


def _shown(text: str) -> str:
    """*text* as is if printable, else quoted with escapes (names and links are untrusted)."""
    return text if text.isprintable() else repr(text)
