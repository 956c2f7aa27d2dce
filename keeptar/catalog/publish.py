"""Naming a stored image and placing it in a project (Arvados story #9045, note 7).

Everything here registers through :mod:`keeptar.catalog.registration`, so the
same rules hold as for ``keeptar load``: links are created only when missing,
owned by the target project; a copy into another project is made from the
source's manifest (no byte is uploaded); the embedded store does it all in one
transaction, Arvados converges; a failure removes what this run created.

An image collection holds exactly one file, ``<image id>.tar`` (the API
server and crunch-run take the image ID from that name), so the image ID of a
collection is read from its file name, and a hash given by the caller must
agree with it.
"""

from __future__ import annotations

import re
from typing import Any

from keeptar.backends import Backend, Record
from keeptar.catalog.images import HASH_LINK, REPO_TAG_LINK, sort_links
from keeptar.catalog.references import (
    abbreviate,
    link_name_problem,
    parse_image_ref,
)
from keeptar.catalog.registration import (
    ImageRegistration,
    Registered,
    register_image,
    register_links,
    resolve_owner,
)
from keeptar.catalog.search import best_image
from keeptar.errors import ArchiveError, NotFoundError, UsageError
from keeptar.keep.manifest import is_collection_ref, parse_manifest

__all__ = [
    "add_image_hash",
    "add_image_metadata",
    "add_image_name",
    "ensure_image",
    "find_or_create_image",
    "image_file",
    "resolve_image",
]

_IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{64}")


def image_file(collection: Record) -> tuple[str, str]:
    """The file name and image ID of an image collection (one file, ``<image id>.tar``).

    Raises:
        ArchiveError: the collection does not hold exactly one ``<image id>.tar``.
    """
    files = parse_manifest(collection.get("manifest_text") or "")
    names = [item.path for item in files]
    if len(files) == 1 and names[0].endswith(".tar") and _IMAGE_ID.fullmatch(names[0][:-4]):
        return names[0], names[0][:-4]
    what = ", ".join(abbreviate(name, 60) for name in names[:3]) or "no file"
    if len(names) > 3:
        what += f" and {len(names) - 3} more"
    raise ArchiveError(
        f"collection {collection.get('uuid') or collection.get('portable_data_hash')} is not "
        f"a Docker image: it must hold exactly one <image id>.tar, and holds {what}"
    )


def _image_id(text: str) -> str:
    value = text.lower()
    if not _IMAGE_ID.fullmatch(value):
        raise UsageError(
            f"{abbreviate(text)} is not an image ID (sha256: and 64 hex digits, "
            "or 64 hex digits for a Docker v1 image)"
        )
    return value


def _name(image_name: str) -> str:
    name = str(parse_image_ref(image_name))
    problem = link_name_problem(name)
    if problem is not None:
        raise UsageError(f"{abbreviate(name)}: {problem}")
    return name


def _collection(backend: Backend, source: Record | str) -> Record:
    if isinstance(source, dict):
        if source.get("manifest_text") is not None and source.get("uuid"):
            return source
        source = str(source.get("uuid") or source.get("portable_data_hash"))
    return backend.get_collection(source)


def _checked(
    backend: Backend,
    project_uuid: str | None,
    source: Record | str,
    image_name: str | None,
    image_hash: str | None,
) -> tuple[str, str | None, Record, str, str]:
    """The owner, the checked name, the image collection, its file name and image ID.

    Raises:
        UsageError: a bad name, or *image_hash* is not the collection's image ID.
        ArchiveError: the collection is not an image.
    """
    owner = resolve_owner(backend, project_uuid)
    name = _name(image_name) if image_name is not None else None
    collection = _collection(backend, source)
    file_name, image_id = image_file(collection)
    if image_hash is not None and _image_id(image_hash) != image_id:
        raise UsageError(
            f"image hash {abbreviate(image_hash)} is not the image ID of collection "
            f"{collection['uuid']}, which holds {image_id}.tar"
        )
    return owner, name, collection, file_name, image_id


def _timestamp(backend: Backend, collection_uuid: str, image_id: str) -> str | None:
    """The ``image_timestamp`` of the collection's best hash link for *image_id*, if any."""
    links = sort_links(
        backend.list_links(
            [
                ["link_class", "=", HASH_LINK],
                ["name", "=", image_id],
                ["head_uuid", "=", collection_uuid],
            ]
        )
    )
    for link in links:
        stamp = (link.get("properties") or {}).get("image_timestamp")
        if isinstance(stamp, str) and stamp:
            return stamp
    return None


def add_image_metadata(
    backend: Backend,
    project_uuid: str | None,
    collection_uuid: str,
    image_name: str | None = None,
    image_hash: str | None = None,
) -> Registered:
    """Give the collection a hash link and (with *image_name*) a name link in the project.

    Links are owned by *project_uuid* (default: the user's home) and created only
    if missing; they carry the ``image_timestamp`` of the collection's best
    existing hash link.  *image_hash* defaults to the collection's file name;
    *image_name* gets ``:latest`` when it has no tag.

    Raises:
        ArchiveError: the collection is not an image (one ``<image id>.tar``).
        UsageError: a bad name, or *image_hash* is not the collection's image ID.
        NotFoundError, ConflictError: no such collection or project, or not writable.
    """
    owner, name, collection, _, image_id = _checked(
        backend, project_uuid, collection_uuid, image_name, image_hash
    )
    links = [(HASH_LINK, image_id)] if image_hash is not None or name is None else []
    if name is not None:
        links.append((REPO_TAG_LINK, name))
    return register_links(
        backend,
        collection,
        owner,
        links,
        image_timestamp=_timestamp(backend, collection["uuid"], image_id),
    )


def add_image_name(
    backend: Backend, project_uuid: str | None, collection_uuid: str, image_name: str
) -> Registered:
    """Name the image collection ``repo:tag`` (``:latest`` if untagged) in the project."""
    return add_image_metadata(backend, project_uuid, collection_uuid, image_name=image_name)


def add_image_hash(
    backend: Backend, project_uuid: str | None, collection_uuid: str, image_hash: str
) -> Registered:
    """Add the collection's ``docker_image_hash`` link in the project (*image_hash* must agree)."""
    return add_image_metadata(backend, project_uuid, collection_uuid, image_hash=image_hash)


def ensure_image(
    backend: Backend,
    project_uuid: str | None,
    source_collection: Record | str,
    image_name: str | None = None,
    image_hash: str | None = None,
) -> Registered:
    """:func:`find_or_create_image`, returning what was registered and created."""
    if image_name is None and image_hash is None:
        raise UsageError("find_or_create_image needs an image name or an image hash (or both)")
    owner, name, source, file_name, image_id = _checked(
        backend, project_uuid, source_collection, image_name, image_hash
    )
    pdh = source["portable_data_hash"]
    request = ImageRegistration(
        image_id=image_id,
        file_name=file_name,
        owner_uuid=owner,
        repo_tags=(name,) if name else (),
        image_timestamp=_timestamp(backend, source["uuid"], image_id),
    )
    owned = source.get("owner_uuid") == owner
    kwargs: dict[str, Any] = (
        {"existing": source} if owned else {"manifest_text": source["manifest_text"]}
    )
    return register_image(
        backend,
        request,
        accept=lambda candidate: candidate.get("portable_data_hash") == pdh,
        **kwargs,
    )


def find_or_create_image(
    backend: Backend,
    project_uuid: str | None,
    source_collection: Record | str,
    image_name: str | None = None,
    image_hash: str | None = None,
) -> Record:
    """Make the project hold a collection with the source's PDH, plus its image links.

    The project (default: the user's home) ends up with a collection whose PDH is
    the source's (the source itself if the project owns it, else one it already
    holds, else a copy made from the source's manifest: no byte is uploaded), a
    ``docker_image_hash`` link and, with *image_name*, a ``docker_image_repo+tag``
    link (``:latest`` if untagged).  Only what is missing is created.

    Args:
        backend: where.
        project_uuid: the target project, or None for the user's home.
        source_collection: a collection record, UUID or PDH holding ``<image id>.tar``.
        image_name: ``repo[:tag]`` to register.
        image_hash: the image ID (must be the source's); with neither, UsageError.

    Returns:
        The image collection record in the project.
    """
    registered = ensure_image(backend, project_uuid, source_collection, image_name, image_hash)
    return registered.collection


def resolve_image(backend: Backend, source: str) -> Record:
    """The image collection (with ``manifest_text``) that *source* names.

    *source* is a collection PDH or UUID (which must hold one ``<image id>.tar``),
    else ``repo[:tag]`` (``latest`` by default, as the API server and ``docker``
    read it), else an image ID prefix with or without ``sha256:``.  Several
    collections of one image: the most preferred one.

    Raises:
        NotFoundError: no such collection or image.
        UsageError: the ID prefix matches several images (they are listed).
        ArchiveError: the collection is not an image.
    """
    if is_collection_ref(source):
        record = backend.get_collection(source)
        image_file(record)
        return record
    found = best_image(backend, source)
    if found is None:
        raise NotFoundError(f"no image {abbreviate(source)} (by name or by image ID prefix)")
    record = backend.get_collection(found.collection_uuid)
    image_file(record)
    return record
