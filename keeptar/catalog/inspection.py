"""A stored image's registration, and whether the API server would run it (``keeptar inspect``).

The server's side comes from ``services/api`` ``collection.rb``
(``get_compatible_images`` / ``find_all_for_docker_image``): an image collection
must hold exactly one file (empty-directory placeholders do not count), and the
first file of its manifest must have a name that fits the pattern of the cluster's
``dockerImageFormats``.  crunch-run (``LoadImage``) then needs exactly one top-level
``.tar`` and runs the image whose ID its name gives, so the file must be
``<image id>.tar`` for the ID the archive really holds.

Hash links do not decide it: a container request names its image by PDH (as
arvados-cwl-runner does), which the server resolves without reading any link, or by
``repo:tag``, which it resolves through ``docker_image_repo+tag`` links; only a lookup
by an image-hash prefix reads ``docker_image_hash`` links.  A missing hash link, or one
that names another ID, is a problem, not a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from keeptar.backends import Backend, Record
from keeptar.catalog.images import HASH_LINK, REPO_TAG_LINK, sort_links
from keeptar.catalog.search import MIGRATION_LINK
from keeptar.formats import ImageInfo
from keeptar.keep.manifest import Locator, ManifestFile, is_portable_data_hash, parse_manifest

__all__ = [
    "StoredRegistration",
    "choose_collection",
    "docker_image_pattern",
    "image_files",
    "registration_of",
]

_IMAGE_LINKS = (HASH_LINK, REPO_TAG_LINK)


def docker_image_pattern(formats: Iterable[str]) -> re.Pattern[str] | None:
    """The file-name pattern the server's ``collection.rb`` uses for *formats*, or None
    (a configuration the server rejects).

    Multi-line, as a Ruby regexp's ``^`` and ``$`` are: use it with ``search``.
    """
    chosen = set(formats)
    if {"v1", "v2"} <= chosen:
        return re.compile(r"^(sha256:)?[0-9A-Fa-f]{64}\.tar$", re.MULTILINE)
    if "v2" in chosen:
        return re.compile(r"^(sha256:)[0-9A-Fa-f]{64}\.tar$", re.MULTILINE)
    if "v1" in chosen:
        return re.compile(r"^[0-9A-Fa-f]{64}\.tar$", re.MULTILINE)
    return None


@dataclass(frozen=True, slots=True)
class StoredRegistration:
    """How a collection is registered as an image.

    Attributes:
        collection: uuid, portable_data_hash, name, owner_uuid and files (path, size).
        links: its ``docker_image_hash`` and ``docker_image_repo+tag`` links, then the
            ``docker_image_migration`` links from or to its PDH (visible ones only:
            the system user owns them).
        properties: the collection's properties.
        accepted_by_server: whether a container on this cluster could run it.
        problems: each disagreement between the links, the file name and the archive.
    """

    collection: dict[str, Any]
    links: tuple[dict[str, Any], ...]
    properties: dict[str, Any]
    accepted_by_server: bool
    problems: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The keys ``keeptar inspect --json`` adds for a stored image."""
        return {
            "collection": self.collection,
            "links": list(self.links),
            "properties": self.properties,
            "accepted_by_server": self.accepted_by_server,
            "problems": list(self.problems),
        }


def image_files(record: Record) -> tuple[list[ManifestFile], list[ManifestFile]]:
    """The files of collection *record* and, among them, its top-level ``.tar`` files."""
    files = parse_manifest(record["manifest_text"])
    return files, [item for item in files if "/" not in item.path and item.path.endswith(".tar")]


def _placeholder(item: ManifestFile) -> bool:
    """An empty directory's ``.`` entry, which the server's file count skips."""
    return item.size == 0 and item.path.rpartition("/")[2] == "."


def choose_collection(backend: Backend, ref: str) -> Record:
    """The collection *ref* names; for a PDH, the most preferred one registered as an
    image (by its hash links), else the newest with that PDH.

    Raises:
        NotFoundError: no such collection.
    """
    record = backend.get_collection(ref)
    if not is_portable_data_hash(ref):
        return record
    holders = [
        item["uuid"]
        for item in backend.list_collections([["portable_data_hash", "=", ref]], select=["uuid"])
    ]
    if holders:
        links = sort_links(
            backend.list_links([["link_class", "=", HASH_LINK], ["head_uuid", "in", holders]])
        )
        if links:
            return backend.get_collection(links[0]["head_uuid"])
    return record


def _link_json(link: Record) -> dict[str, Any]:
    properties = link.get("properties") or {}
    doc = {
        "uuid": link.get("uuid"),
        "link_class": link.get("link_class"),
        "name": link.get("name"),
        "owner_uuid": link.get("owner_uuid"),
        "head_uuid": link.get("head_uuid"),
        "tail_uuid": link.get("tail_uuid"),
        "image_timestamp": properties.get("image_timestamp")
        if isinstance(properties, dict)
        else None,
        "created_at": link.get("created_at"),
    }
    return doc


def _instant(value: Any) -> datetime | None:
    """An RFC 3339 time (nanoseconds allowed, as Docker writes them), or None."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", value.strip()
    )
    if match is None:
        return None
    fraction = (match.group(2) or ".0")[1:7].ljust(6, "0")
    zone = match.group(3) or "Z"
    try:
        parsed = datetime.fromisoformat(
            f"{match.group(1)}.{fraction}{'+00:00' if zone == 'Z' else zone}"
        )
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc)


def registration_of(
    backend: Backend,
    record: Record,
    image: ImageInfo | None,
    *,
    image_file: str | None,
    missing_blocks: Sequence[str] = (),
) -> StoredRegistration:
    """The registration of collection *record*, checked against *image* (read from its
    file *image_file*; None if the archive could not be read).

    *missing_blocks* are blocks of the file found missing (``--verify``).
    """
    uuid = str(record.get("uuid") or "")
    pdh = str(record.get("portable_data_hash") or "")
    files, tars = image_files(record)
    links = sort_links(
        backend.list_links([["link_class", "in", list(_IMAGE_LINKS)], ["head_uuid", "=", uuid]])
    )
    migrations = [
        *backend.list_links([["link_class", "=", MIGRATION_LINK], ["tail_uuid", "=", pdh]]),
        *backend.list_links([["link_class", "=", MIGRATION_LINK], ["head_uuid", "=", pdh]]),
    ]
    problems: list[str] = []
    accepted = True

    # The server: exactly one file, the manifest's first file's name (directories are
    # its stream) fitting the cluster's formats; crunch-run: one top-level .tar.
    formats = backend.server_facts().docker_image_formats
    pattern = docker_image_pattern(formats)
    real = [item for item in files if not _placeholder(item)]
    if len(real) != 1 or len(tars) != 1:
        accepted = False
        names = ", ".join(item.path for item in real[:5]) + (" …" if len(real) > 5 else "")
        problems.append(
            f"the collection holds {len(real)} files ({len(tars)} top-level .tar): "
            f"the server needs exactly one <image id>.tar ({names or 'none'})"
        )
    first = files[0].path.rpartition("/")[2] if files else ""
    if len(real) == 1 and len(tars) == 1 and (pattern is None or not pattern.search(first)):
        accepted = False
        moved = [link for link in sort_links(migrations) if link.get("tail_uuid") == pdh]
        instead = (
            f"the server runs {moved[0].get('head_uuid')} instead, where its "
            "docker_image_migration link leads"
            if moved
            else "the server does not run it"
        )
        problems.append(
            f"file name {first} does not fit this cluster's dockerImageFormats "
            f"({', '.join(formats) or 'none'}): {instead}"
        )

    hash_links = [link for link in links if link.get("link_class") == HASH_LINK]
    if image is None:
        accepted = False
    else:
        if image_file is not None and image_file != image.file_name:
            accepted = False
            problems.append(
                f"file name {image_file} is not the archive's image ID: the archive holds "
                f"{image.id} (the file should be {image.file_name})"
            )
        # Problems, not refusals: no lookup of a PDH or a repo:tag reads hash links.
        if not hash_links:
            problems.append(f"no docker_image_hash link names the collection (image {image.id})")
        for link in hash_links:
            if link.get("name") != image.id:
                problems.append(
                    f"docker_image_hash link {link.get('uuid')} says image {link.get('name')}, "
                    f"but the archive holds {image.id}"
                )
        created = _instant(image.created)
        for link in links:
            properties = link.get("properties") or {}
            stamp = properties.get("image_timestamp") if isinstance(properties, dict) else None
            if stamp is None or created is None:
                continue
            if _instant(stamp) != created:
                problems.append(
                    f"{link.get('link_class')} link {link.get('uuid')} ({link.get('name')}) has "
                    f"image_timestamp {stamp}, but the archive's config says created "
                    f"{image.created}"
                )
    if missing_blocks:  # crunch-run could not read the whole file
        accepted = False
    for locator in missing_blocks:  # without its signature: that grants reading it
        shown = Locator.parse(locator).stripped
        problems.append(f"block {shown} of {image_file} is missing from Keep")

    return StoredRegistration(
        collection={
            "uuid": uuid,
            "portable_data_hash": pdh,
            "name": record.get("name"),
            "owner_uuid": record.get("owner_uuid"),
            "files": [{"path": item.path, "size": item.size} for item in files],
        },
        links=tuple(_link_json(link) for link in [*links, *sort_links(migrations)]),
        properties=dict(record.get("properties") or {}),
        accepted_by_server=accepted,
        problems=tuple(problems),
    )
