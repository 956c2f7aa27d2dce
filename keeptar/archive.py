"""Reading image archives: the importable API behind ``keeptar inspect``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from keeptar.errors import NotFoundError, UsageError
from keeptar.formats import ArchiveInfo, ArchiveScanner, read_images
from keeptar.streaming.sources import ByteSource, open_source, run_tar_stream

if TYPE_CHECKING:
    from keeptar.backends import Backend, Record
    from keeptar.keep.manifest import ManifestFile

__all__ = ["find_image_file", "inspect_archive", "inspect_collection", "inspect_source"]


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
