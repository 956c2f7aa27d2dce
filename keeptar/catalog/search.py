"""Finding stored images by name or by image-ID prefix (Arvados story #9045, note 7).

The results follow ``arvados.commands.keepdocker.list_images_in_arv`` and the API
server's ``Collection.find_all_for_docker_image``: matching links, each
collection's best ``docker_image_hash`` link for its ID, one row per
(collection, name), collections with only a hash link as ``<none>``, every
collection readable (and, with a project, owned by it), newest
``image_timestamp`` first (missing ones last), then newest link.  Like the SDK,
each link is compared to the microsecond; the server compares whole seconds,
and where a collection has several matching links it takes the oldest link's
values (Arvados #9429), so ties within a second may come out differently there.

Where the cluster's ``dockerImageFormats`` refuses a collection's file name (a
Docker v1 ``<hex>.tar`` on a v2-only cluster), the server follows the newest
``docker_image_migration`` link owned by the system user from its PDH to a
readable collection that fits, and runs that one instead; the row then names
that collection, as ``find_all_for_docker_image`` does.  Those links belong to
the system user, which only admins can read: where none is visible the row is
kept as stored (the server may still resolve it).

Names match as in ``keeptar images``: spellings Docker treats as one repository
(``x``, ``library/x``, ``docker.io/library/x``…) match each other.  A hash
prefix matches with or without ``sha256:`` (Docker v1 IDs have none).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keeptar.backends import Backend, Record
from keeptar.catalog.images import HASH_LINK, REPO_TAG_LINK, sort_links
from keeptar.catalog.references import abbreviate, same_repository_names, split_image_ref
from keeptar.errors import UsageError
from keeptar.keep.manifest import parse_manifest

__all__ = [
    "ImageMatch",
    "best_image",
    "hash_prefix_problem",
    "search_images",
    "search_images_by_hash",
    "search_images_by_name",
]

_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True, slots=True)
class ImageMatch:
    """One stored image under one name, as the search functions return it.

    Attributes:
        repo: the repository as its link stores it, or ``<none>`` (a hash link only).
        tag: the tag, or ``<none>``.
        image_id: the ID from the collection's best ``docker_image_hash`` link,
            or ``<unknown>`` if it has none.
        collection_uuid: the image collection.
        portable_data_hash: its PDH.
        owner_uuid: the project (or user) that owns the collection.
        image_timestamp: the link's ``properties.image_timestamp``, or None.
        link_created_at: when the link was made (the second sort key).
    """

    repo: str
    tag: str
    image_id: str
    collection_uuid: str
    portable_data_hash: str
    owner_uuid: str
    image_timestamp: str | None
    link_created_at: str | None = None

    @property
    def name(self) -> str | None:
        """``repo:tag``, or None for an image with no name."""
        return None if self.repo == "<none>" else f"{self.repo}:{self.tag}"

    def to_json(self) -> dict[str, Any]:
        """A JSON object with every field."""
        return {
            "repo": self.repo,
            "tag": self.tag,
            "image_id": self.image_id,
            "collection_uuid": self.collection_uuid,
            "portable_data_hash": self.portable_data_hash,
            "owner_uuid": self.owner_uuid,
            "image_timestamp": self.image_timestamp,
            "link_created_at": self.link_created_at,
        }


def hash_prefix_problem(prefix: str) -> str | None:
    """Why *prefix* cannot be an image-ID prefix, or None."""
    hexpart = prefix.lower().removeprefix("sha256:")
    if not _HEX_PREFIX.fullmatch(hexpart):
        return "an image ID prefix is 1 to 64 hex digits, with or without sha256:"
    return None


def search_images_by_name(
    backend: Backend, name: str, project_uuid: str | None = None
) -> list[ImageMatch]:
    """Images named ``repo`` (every tag) or ``repo:tag``, most preferred first.

    Args:
        backend: where to look.
        name: ``repo`` or ``repo:tag``; any spelling of the repository Docker
            treats as the same one matches.
        project_uuid: only links (and collections) owned by this project.
    """
    scope = _scope(project_uuid)
    ref = split_image_ref(name)
    spellings = same_repository_names(ref.repo) if ref.repo else []
    if ref.repo != name:  # repo:tag
        wanted = [f"{spelling}:{ref.tag}" for spelling in spellings]
        links = list(
            backend.list_links([["link_class", "=", REPO_TAG_LINK], ["name", "in", wanted], *scope])
        )
    else:  # every tag: one LIKE per spelling, then the exact repository checked
        accepted = set(spellings)
        links = []
        seen: set[str] = set()
        for spelling in spellings:
            for link in backend.list_links(
                [["link_class", "=", REPO_TAG_LINK], ["name", "like", f"{spelling}:%"], *scope]
            ):
                repo, colon, tag = str(link.get("name") or "").rpartition(":")
                if colon and "/" not in tag and repo in accepted and link["uuid"] not in seen:
                    seen.add(link["uuid"])
                    links.append(link)
    if not links:
        return []
    heads = sorted({link["head_uuid"] for link in links})
    hashes = backend.list_links(
        [["link_class", "=", HASH_LINK], ["head_uuid", "in", heads], *scope]
    )
    return _listing(backend, sort_links(links), sort_links(hashes), scope)


def search_images_by_hash(
    backend: Backend, hash_prefix: str, project_uuid: str | None = None
) -> list[ImageMatch]:
    """Images whose ID starts with *hash_prefix* (``sha256:`` optional), most preferred first.

    Each matching collection is listed under each of its names, or once as
    ``<none>`` if it has none.

    Raises:
        UsageError: *hash_prefix* is not 1 to 64 hex digits (after ``sha256:``).
    """
    problem = hash_prefix_problem(hash_prefix)
    if problem is not None:
        raise UsageError(f"{hash_prefix!r} is not an image ID prefix: {problem}")
    scope = _scope(project_uuid)
    prefix = hash_prefix.lower()
    patterns = [prefix] if prefix.startswith("sha256:") else [f"sha256:{prefix}", prefix]
    hashes: dict[str, Record] = {}
    for pattern in patterns:
        for link in backend.list_links(
            [["link_class", "=", HASH_LINK], ["name", "like", f"{pattern}%"], *scope]
        ):
            hashes.setdefault(link["uuid"], link)
    if not hashes:
        return []
    heads = sorted({link["head_uuid"] for link in hashes.values()})
    names = backend.list_links(
        [["link_class", "=", REPO_TAG_LINK], ["head_uuid", "in", heads], *scope]
    )
    return _listing(backend, sort_links(names), sort_links(hashes.values()), scope)


def search_images(
    backend: Backend, name_or_hash_prefix: str, project_uuid: str | None = None
) -> list[ImageMatch]:
    """Images by name, else (if no name matches) by image-ID prefix, as the server looks."""
    found = search_images_by_name(backend, name_or_hash_prefix, project_uuid)
    if found or hash_prefix_problem(name_or_hash_prefix) is not None:
        return found
    return search_images_by_hash(backend, name_or_hash_prefix, project_uuid)


def best_image(backend: Backend, term: str, *, lenient_name: bool = False) -> ImageMatch | None:
    """The most preferred image *term* names, or None.

    *term* is ``repo[:tag]`` (``latest`` by default, as the API server and
    ``docker`` read it), else an image ID prefix with or without ``sha256:``.
    The one resolver behind ``tag``, ``push`` and ``inspect``.

    Args:
        backend: where to look.
        term: the name or ID prefix.
        lenient_name: a *term* that is not a valid image name is only tried as an
            ID prefix, instead of being a usage error.

    Raises:
        UsageError: *term* is not a valid name (unless *lenient_name*), or it is an
            ID prefix of several images (they are listed).
    """
    try:
        ref = split_image_ref(term)
        found = search_images_by_name(backend, str(ref)) if ref.repo else []
    except UsageError:
        if not lenient_name:
            raise
        found = []
    if not found and hash_prefix_problem(term) is None:
        found = search_images_by_hash(backend, term)
        ids = list(dict.fromkeys(match.image_id for match in found))
        if len(ids) > 1:
            shown = ", ".join(image_id.removeprefix("sha256:")[:12] for image_id in ids[:10])
            more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
            raise UsageError(
                f"image ID prefix {abbreviate(term)} is ambiguous: it matches "
                f"{len(ids)} images ({shown}{more}); give more digits"
            )
    return found[0] if found else None


def _scope(project_uuid: str | None) -> list[list[Any]]:
    return [["owner_uuid", "=", project_uuid]] if project_uuid else []


def _listing(
    backend: Backend,
    names: Sequence[Record],
    hashes: Sequence[Record],
    scope: list[list[Any]],
) -> list[ImageMatch]:
    """Rows as ``list_images_in_arv`` builds them from sorted *names* and *hashes*."""
    best_hash: dict[str, Record] = {}
    for link in hashes:
        best_hash.setdefault(link["head_uuid"], link)
    rows: list[tuple[Record, str, str, str]] = []  # (link, repo, tag, image_id)
    seen: set[tuple[str, str]] = set()
    for link in names:
        key = (link["head_uuid"], link["name"])
        if key in seen:
            continue
        seen.add(key)
        repo, colon, tag = link["name"].rpartition(":")
        if not colon:
            repo, tag = link["name"], "<none>"
        found = best_hash.get(link["head_uuid"])
        rows.append((link, repo, tag, found["name"] if found else "<unknown>"))
    named = {link["head_uuid"] for link in names}
    rows += [
        (link, "<none>", "<none>", link["name"])
        for head, link in best_hash.items()
        if head not in named
    ]
    rows = [rows[i] for i in _stable_order([row[0] for row in rows])]
    collections = _collections(backend, {row[0]["head_uuid"] for row in rows}, scope)
    migrated = _migrations(backend, collections, {row[0]["head_uuid"]: row[3] for row in rows})
    out = []
    for link, repo, tag, image_id in rows:
        record = collections.get(link["head_uuid"])
        if record is None:
            continue
        if record["uuid"] in migrated:
            record, image_id = migrated[record["uuid"]]
        stamp = (link.get("properties") or {}).get("image_timestamp")
        out.append(
            ImageMatch(
                repo=repo,
                tag=tag,
                image_id=image_id,
                collection_uuid=record["uuid"],
                portable_data_hash=record["portable_data_hash"],
                owner_uuid=record["owner_uuid"],
                image_timestamp=stamp if isinstance(stamp, str) else None,
                link_created_at=link.get("created_at"),
            )
        )
    return out


def _stable_order(links: Sequence[Record]) -> list[int]:
    """Indexes of *links* in preference order; ties keep their order (Python's stable sort)."""
    ordered = sort_links(dict(link, _index=i) for i, link in enumerate(links))
    return [link["_index"] for link in ordered]


MIGRATION_LINK = "docker_image_migration"


def image_file_pattern(formats: Sequence[str]) -> re.Pattern[str] | None:
    """The file name the server accepts for *formats* (``dockerImageFormats``), or None."""
    if "v1" in formats and "v2" in formats:
        return re.compile(r"^(sha256:)?[0-9A-Fa-f]{64}\.tar$")
    if "v2" in formats:
        return re.compile(r"^(sha256:)[0-9A-Fa-f]{64}\.tar$")
    if "v1" in formats:
        return re.compile(r"^[0-9A-Fa-f]{64}\.tar$")
    return None


def _fitting_file(record: Record, pattern: re.Pattern[str]) -> str | None:
    """The image ID if *record* holds exactly one file and its name fits *pattern*."""
    files = parse_manifest(record.get("manifest_text") or "")
    name = files[0].path.rpartition("/")[2] if len(files) == 1 else ""
    return name[: -len(".tar")] if pattern.search(name) else None


def _migrations(
    backend: Backend, collections: Mapping[str, Record], image_ids: Mapping[str, str]
) -> dict[str, tuple[Record, str]]:
    """Collections the server would replace through a migration link: uuid -> (target, ID).

    Only collections whose hash link names an ID the cluster refuses are looked at
    (registration makes the file ``<image id>.tar``), so a listing of accepted
    images costs no extra call.
    """
    pattern = image_file_pattern(backend.server_facts().docker_image_formats)
    if pattern is None:
        return {}
    doubtful = sorted(
        uuid
        for uuid in collections
        if not pattern.search(f"{image_ids.get(uuid, '<unknown>')}.tar")
    )
    if not doubtful:
        return {}
    stored = {
        record["uuid"]: record
        for record in backend.list_collections(
            [["uuid", "in", doubtful]], select=["uuid", "portable_data_hash", "manifest_text"]
        )
    }
    refused = {uuid: r for uuid, r in stored.items() if _fitting_file(r, pattern) is None}
    if not refused:
        return {}
    system_user = f"{backend.server_facts().uuid_prefix}-tpzed-000000000000000"
    newest: dict[str, str] = {}  # old PDH -> new PDH; links come oldest first
    for link in backend.list_links(
        [
            ["link_class", "=", MIGRATION_LINK],
            ["tail_uuid", "in", sorted({r["portable_data_hash"] for r in refused.values()})],
            ["owner_uuid", "=", system_user],
        ]
    ):
        newest[link["tail_uuid"]] = link["head_uuid"]
    if not newest:
        return {}
    targets: dict[str, tuple[Record, str]] = {}
    for record in backend.list_collections(
        [["portable_data_hash", "in", sorted(set(newest.values()))]],
        select=["uuid", "portable_data_hash", "owner_uuid", "manifest_text"],
    ):
        image_id = _fitting_file(record, pattern)
        if image_id is not None:
            targets[record["portable_data_hash"]] = (record, image_id)
    return {
        uuid: targets[newest[record["portable_data_hash"]]]
        for uuid, record in refused.items()
        if newest.get(record["portable_data_hash"]) in targets
    }


def _collections(
    backend: Backend, uuids: Iterable[str], scope: list[list[Any]]
) -> dict[str, Record]:
    wanted = sorted(set(uuids))
    if not wanted:
        return {}
    found = backend.list_collections(
        [["uuid", "in", wanted], *scope], select=["uuid", "portable_data_hash", "owner_uuid"]
    )
    return {record["uuid"]: record for record in found}
