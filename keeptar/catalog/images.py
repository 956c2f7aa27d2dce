"""Docker image metadata stored as Arvados links, read and written through any backend.

An image is a collection holding ``<image id>.tar``, a ``docker_image_hash``
link named with the ID, and ``docker_image_repo+tag`` links named
``repo:tag``.  Both kinds carry ``properties.image_timestamp``.  Listing
follows the preference order of the API server and of
``arvados.commands.keepdocker.list_images_in_arv``: newest
``image_timestamp`` first (missing ones last), then newest link.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keeptar.backends import Backend, Record
from keeptar.catalog.references import same_repository_names

__all__ = [
    "HASH_LINK",
    "REPO_TAG_LINK",
    "ImageListing",
    "find_image_collections",
    "list_images",
    "sort_links",
]

HASH_LINK = "docker_image_hash"
REPO_TAG_LINK = "docker_image_repo+tag"
_EARLIEST = dt.datetime(dt.MINYEAR, 1, 1)


@dataclass(frozen=True, slots=True)
class ImageListing:
    """One row of ``keeptar images``.

    Attributes:
        repo: repository, or ``<none>``.
        tag: tag, or ``<none>``.
        image_id: the ID from the collection's best hash link, or ``<unknown>``.
        collection: the collection UUID.
        created: the link's ``image_timestamp``, else its ``created_at``.
    """

    repo: str
    tag: str
    image_id: str
    collection: str
    created: str | None

    @property
    def short_id(self) -> str:
        """The 12 hex digits ``docker images`` shows."""
        return self.image_id.removeprefix("sha256:")[:12]

    def to_json(self) -> dict[str, Any]:
        """The ``keeptar images --json`` form."""
        return {
            "repo": self.repo,
            "tag": self.tag,
            "image_id": self.image_id,
            "collection": self.collection,
            "created": self.created,
        }


def _parse_time(value: Any) -> dt.datetime | None:
    import ciso8601

    try:
        parsed: dt.datetime = ciso8601.parse_datetime_as_naive(value)
        return parsed
    except (TypeError, ValueError):
        return None


def _sort_key(link: Mapping[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    stamp = _parse_time((link.get("properties") or {}).get("image_timestamp"))
    created = _parse_time(link.get("created_at"))
    return (stamp or _EARLIEST, created or _EARLIEST)


def sort_links(links: Iterable[Record]) -> list[Record]:
    """*links* most preferred first: newest image_timestamp, then newest link."""
    return sorted(links, key=_sort_key, reverse=True)


def _timestamp(link: Mapping[str, Any]) -> str | None:
    stamp = (link.get("properties") or {}).get("image_timestamp")
    if _parse_time(stamp) is not None:
        return str(stamp)
    created = link.get("created_at")
    return str(created) if created else None


def list_images(
    backend: Backend,
    *,
    repo: str | None = None,
    tag: str | None = None,
    project_uuid: str | None = None,
    include_untagged: bool = False,
) -> list[ImageListing]:
    """List images, most preferred first.

    Args:
        backend: where to look.
        repo: only this repository (with *tag*, only ``repo:tag``), under any
            spelling Docker treats as the same (``x``, ``docker.io/library/x``…).
        tag: with *repo*, the tag (``latest`` if None).
        project_uuid: only links owned by this project.
        include_untagged: also list collections with a hash link but no name.
    """
    scope: list[list[Any]] = [["owner_uuid", "=", project_uuid]] if project_uuid else []
    name_filters: list[list[Any]] = []
    if repo is not None:
        spellings = [f"{name}:{tag or 'latest'}" for name in same_repository_names(repo)]
        name_filters = [["name", "in", spellings]]
    names = sort_links(
        backend.list_links([["link_class", "=", REPO_TAG_LINK], *name_filters, *scope])
    )
    heads = sorted({link["head_uuid"] for link in names})
    hash_filters: list[list[Any]] = [["link_class", "=", HASH_LINK], *scope]
    if repo is not None:
        hash_filters.append(["head_uuid", "in", heads])
    # A name that matches no link has no hash links to look up either.
    no_heads = repo is not None and not heads
    hashes = [] if no_heads else sort_links(backend.list_links(hash_filters))
    best_hash: dict[str, Record] = {}
    for link in hashes:
        best_hash.setdefault(link["head_uuid"], link)

    rows: list[tuple[tuple[dt.datetime, dt.datetime], ImageListing]] = []

    def add(link: Record, repo: str, tag: str, image_id: str) -> None:
        listing = ImageListing(repo, tag, image_id, link["head_uuid"], _timestamp(link))
        rows.append((_sort_key(link), listing))

    seen: set[tuple[str, str]] = set()
    for link in names:
        if (link["head_uuid"], link["name"]) in seen:
            continue
        seen.add((link["head_uuid"], link["name"]))
        name, _, link_tag = link["name"].rpartition(":")
        if not name:
            name, link_tag = link_tag, "<none>"
        found = best_hash.get(link["head_uuid"])
        add(link, name, link_tag, found["name"] if found else "<unknown>")
    if include_untagged and repo is None:
        named = {link["head_uuid"] for link in names}
        for head, link in best_hash.items():
            if head not in named:
                add(link, "<none>", "<none>", link["name"])
    rows.sort(key=lambda row: row[0], reverse=True)
    readable = _readable_collections(backend, {row.collection for _, row in rows})
    return [row for _, row in rows if row.collection in readable]


def _readable_collections(backend: Backend, uuids: set[str]) -> set[str]:
    if not uuids:
        return set()
    found = backend.list_collections([["uuid", "in", sorted(uuids)]], select=["uuid"])
    return {record["uuid"] for record in found}


def find_image_collections(
    backend: Backend, image_id: str, *, select: Sequence[str] | None = None
) -> list[Record]:
    """Readable collections that ``docker_image_hash`` links name *image_id*, preferred first."""
    links = sort_links(
        backend.list_links([["link_class", "=", HASH_LINK], ["name", "=", image_id]])
    )
    order = list(dict.fromkeys(link["head_uuid"] for link in links))
    if not order:
        return []
    records = {
        record["uuid"]: record
        for record in backend.list_collections([["uuid", "in", order]], select=select)
    }
    return [records[uuid] for uuid in order if uuid in records]
