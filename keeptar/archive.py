"""Reading image archives: the importable API behind ``keeptar inspect``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from keeptar.errors import KeeptarError, NotFoundError, UsageError
from keeptar.formats import ArchiveInfo, ArchiveScanner, read_images
from keeptar.streaming.sources import ByteSource, open_source, run_tar_stream

if TYPE_CHECKING:
    from keeptar.backends import Backend, Record
    from keeptar.catalog.inspection import StoredRegistration
    from keeptar.keep.manifest import ManifestFile

__all__ = [
    "find_image_file",
    "inspect_archive",
    "inspect_collection",
    "inspect_source",
    "inspect_stored_image",
]


def inspect_source(
    source: ByteSource,
    *,
    verify: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ArchiveInfo:
    """Read the archive *source* in one pass and describe its images.

    Without *verify*, layer data is skipped (seeked over on files); with it,
    every member is hashed and layers are checked against the configs.

    Raises:
        ArchiveError: the input is not a readable image archive.
        VerificationError: with *verify*, a digest does not match.
    """
    scanner = ArchiveScanner(digest=verify)
    result = run_tar_stream(source, scanner, progress=progress)
    layout, images = read_images(scanner.scan, verify=verify)
    return ArchiveInfo(
        format=layout,
        compression=result.compression.value,
        images=tuple(images),
        tar_bytes=result.tar_bytes,
        verified=verify,
        warnings=scanner.scan.docker_load_problems(),
    )


def inspect_archive(
    target: str | os.PathLike[str] | BinaryIO,
    *,
    verify: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ArchiveInfo:
    """Describe the image archive at *target*: a path, ``"-"`` for stdin, or a binary stream.

    See :func:`inspect_source` for *verify*, *progress* and errors; also raises
    :class:`~keeptar.errors.UsageError` if the path cannot be opened.
    """
    with open_source(target) as source:
        return inspect_source(source, verify=verify, progress=progress)


def find_image_file(
    backend: Backend, collection: str, path: str = ""
) -> tuple[Record, ManifestFile]:
    """Return a collection and its image file: *path*, or its one top-level ``.tar``.

    Raises:
        NotFoundError: no such collection or file, or no ``.tar`` file.
        UsageError: several ``.tar`` files and no *path* to choose one (as crunch-run).
    """
    record = backend.get_collection(collection)
    from keeptar.keep.manifest import parse_manifest  # only collections need it

    files = parse_manifest(record["manifest_text"])
    if path:
        for item in files:
            if item.path == path:
                return record, item
        raise NotFoundError(f"collection {collection} has no file {path!r}")
    tars = [item for item in files if "/" not in item.path and item.path.endswith(".tar")]
    if not tars:
        raise NotFoundError(f"collection {collection} holds no .tar image file")
    if len(tars) > 1:
        names = ", ".join(item.path for item in tars)
        raise UsageError(f"collection {collection} holds several .tar files: {names}")
    return record, tars[0]


def inspect_collection(
    backend: Backend, collection: str, path: str = "", *, verify: bool = False
) -> tuple[ArchiveInfo, int, int]:
    """Describe the image archive stored in a collection, fetching as few blocks as it can.

    Returns:
        The description, the number of Keep blocks fetched, and the file's block count.
    """
    from keeptar.keep.blocks import KeepFileReader

    _, item = find_image_file(backend, collection, path)
    reader = KeepFileReader(backend.get_block, item, name=f"{collection}/{item.path}")
    info = inspect_source(ByteSource(reader, reader.name), verify=verify)  # type: ignore[arg-type]
    return info, reader.blocks_fetched, len({segment.locator for segment in item.segments})


def inspect_stored_image(
    backend: Backend, target: str, *, verify: bool = False
) -> tuple[ArchiveInfo | None, StoredRegistration, int, int]:
    """Describe a stored image and its registration (``keeptar inspect PDH|UUID|REPO[:TAG]``).

    *target* is a collection PDH or UUID, else an image name or ID prefix, resolved
    as :func:`keeptar.catalog.search_images` finds it (the most preferred image).
    A collection that the server would refuse (several ``.tar`` files, say) is
    still described: what is wrong is in the registration's ``problems``.  With
    *verify*, every block of the image file is checked to be in Keep first, and
    the layers are hashed if they all are.

    Returns:
        The archive's description (None if a missing block stopped the read), the
        registration, the number of Keep blocks fetched, and the file's block count.

    Raises:
        NotFoundError: no such collection or image, or the collection has no ``.tar``.
        UsageError: an image ID prefix that matches several images.
        ArchiveError: the file is not a readable image archive.
    """
    from keeptar.catalog.inspection import choose_collection, image_files, registration_of
    from keeptar.keep.blocks import KeepFileReader
    from keeptar.keep.manifest import is_collection_ref

    if is_collection_ref(target):
        record = choose_collection(backend, target)
    else:
        record = backend.get_collection(_resolve_image_name(backend, target))
    name = record.get("uuid") or target
    _, tars = image_files(record)
    if not tars:
        raise NotFoundError(f"collection {name} holds no .tar image file")
    item = tars[0]
    if len(tars) > 1:  # the file the hash link names, if one does
        hashes = {
            f"{link['name']}.tar"
            for link in backend.list_links(
                [["link_class", "=", "docker_image_hash"], ["head_uuid", "=", record["uuid"]]]
            )
        }
        item = next((tar for tar in tars if tar.path in hashes), item)
    locators = list(dict.fromkeys(segment.locator for segment in item.segments))
    missing = [loc for loc in locators if not backend.has_block(loc)] if verify else []
    reader = KeepFileReader(backend.get_block, item, name=f"{name}/{item.path}")
    info: ArchiveInfo | None
    try:
        info = inspect_source(ByteSource(reader, reader.name), verify=verify and not missing)  # type: ignore[arg-type]
    except KeeptarError:
        if not missing:
            raise
        info = None  # the missing block held metadata: nothing more to read
    image = None
    if info is not None and info.images:
        by_name = [i for i in info.images if i.file_name == item.path]
        image = by_name[0] if by_name else info.images[0]
    registration = registration_of(
        backend, record, image, image_file=item.path, missing_blocks=missing
    )
    return info, registration, reader.blocks_fetched, len(locators)


def _resolve_image_name(backend: Backend, target: str) -> str:
    """The collection UUID of the image *target* names, as
    :func:`keeptar.catalog.search_images` finds it: ``repo[:tag]`` (``latest`` by
    default, as the server reads it), else an image ID prefix."""
    from keeptar.catalog.references import abbreviate
    from keeptar.catalog.search import best_image

    found = best_image(backend, target, lenient_name=True)
    if found is None:
        raise NotFoundError(
            f"no file, collection or image {abbreviate(target)} (by name or image ID prefix)"
        )
    return found.collection_uuid
