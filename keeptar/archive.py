"""Reading image archives: the importable API behind ``keeptar inspect``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

from keeptar.formats import ArchiveInfo, ArchiveScanner, read_images
from keeptar.streaming.sources import ByteSource, open_source, run_tar_stream

__all__ = ["inspect_archive", "inspect_source"]


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
