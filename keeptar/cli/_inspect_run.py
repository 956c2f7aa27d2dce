"""The work of ``keeptar inspect``, importable without typer.

:mod:`keeptar.cli.inspect` declares the command for typer.  A plain command line
(``keeptar inspect [--json] [--verify] [--[no-]progress] [TARGET]``) is answered
by :func:`run_plain` before typer is imported, which halves the start-up of
inspecting a file (issue 8); anything else (``--help``, ``--backend``, a typo, a
repeated option) goes to typer, so its messages stay typer's.  Both run
:func:`run_inspect`.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from keeptar.cli._output import (
    echo,
    emit_json,
    progress_reporter,
    quiet_broken_stdout,
    reporting_errors,
    run_guarded,
)

if TYPE_CHECKING:
    from keeptar.catalog.inspection import StoredRegistration
    from keeptar.formats import ArchiveInfo

__all__ = ["plain_arguments", "render_registration", "render_text", "run_inspect", "run_plain"]

#: The options a plain command line may hold: each sets one argument of run_inspect.
PLAIN_FLAGS: dict[str, tuple[str, bool]] = {
    "--json": ("as_json", True),
    "--verify": ("verify", True),
    "--progress": ("progress", True),
    "--no-progress": ("progress", False),
}


def plain_arguments(args: list[str]) -> dict[str, Any] | None:
    """run_inspect's arguments for the command line *args* (after ``inspect``), or None.

    None means "let typer parse it": anything but :data:`PLAIN_FLAGS`, each at most
    once, and at most one TARGET (``-`` or a word not starting with ``-``).  With
    no ``--backend``, the backend is ``KEEPTAR_BACKEND``'s, as typer's option would
    read it, which :func:`keeptar.backends.open_backend` does itself.
    """
    options: dict[str, Any] = {
        "target": "-",
        "as_json": False,
        "verify": False,
        "progress": None,
        "backend": None,
    }
    seen: set[str] = set()
    targets: list[str] = []
    for arg in args:
        if arg in PLAIN_FLAGS:
            name, value = PLAIN_FLAGS[arg]
            if name in seen:
                return None
            seen.add(name)
            options[name] = value
        elif arg == "-" or not arg.startswith("-"):
            targets.append(arg)
        else:
            return None
    if len(targets) > 1:
        return None
    if targets:
        options["target"] = targets[0]
    return options


def run_plain(options: dict[str, Any]) -> None:
    """Run ``keeptar inspect`` with *options* from :func:`plain_arguments`, as typer would:
    the same errors, exit codes and quiet end on a closed stdout."""

    def command() -> None:
        with quiet_broken_stdout():
            run_inspect(**options)

    run_guarded(command)


def run_inspect(
    target: str, *, as_json: bool, verify: bool, progress: bool | None, backend: str | None
) -> None:
    """Describe *target*, an archive or a stored image, on stdout (``keeptar inspect``)."""
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
        sys.stderr.write(f"{note}\n")


def render_text(info: ArchiveInfo) -> str:
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


def render_registration(registration: StoredRegistration) -> str:
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
