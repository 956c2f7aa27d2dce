"""Storing only what a compute node can load, by reusing blocks already in Keep.

:func:`is_loadable` decides whether an existing image collection may be
reused; :func:`scan_archive` and :func:`rewrite_manifest` store an OCI-only
or multi-image archive as a loadable single-image file made of segments of
the blocks already uploaded plus one small new block (see
:mod:`keeptar.formats.loadable`).
"""

from __future__ import annotations

from collections.abc import Sequence

from keeptar.backends import Backend
from keeptar.errors import KeeptarError
from keeptar.formats import ArchiveScan, ArchiveScanner, ImageInfo, read_images
from keeptar.formats.loadable import Rewrite, is_loadable_scan, plan_rewrite
from keeptar.keep.blocks import KeepFileReader
from keeptar.keep.manifest import FileSegment, manifest_from_segments, parse_manifest
from keeptar.keep.segments import slice_segments
from keeptar.streaming.sources import ByteSource, run_tar_stream

__all__ = [
    "Rewrite",
    "is_loadable",
    "plan_rewrite",
    "rewrite_manifest",
    "scan_archive",
    "unloadable_warning",
]


def scan_archive(source: ByteSource) -> tuple[ArchiveScan, list[ImageInfo]]:
    """Read the metadata of the archive *source* (layer data is skipped)."""
    scanner = ArchiveScanner()
    run_tar_stream(source, scanner)
    _, images = read_images(scanner.scan)
    return scanner.scan, images


def is_loadable(backend: Backend, manifest_text: str, image: ImageInfo) -> bool:
    """Whether a stored collection is one a compute node can run as *image*.

    It must hold exactly one top-level ``.tar``, named ``<image id>.tar``, whose
    ``manifest.json`` lists this image and no other (a Docker v1 archive: this
    image only).  Only the blocks holding tar headers and metadata are read.
    """
    try:
        files = parse_manifest(manifest_text)
    except KeeptarError:
        return False
    tars = [item for item in files if "/" not in item.path and item.path.endswith(".tar")]
    if len(tars) != 1 or tars[0].path != image.file_name:
        return False
    reader = KeepFileReader(backend.get_block, tars[0])
    try:
        scan, images = scan_archive(ByteSource(reader, reader.name))  # type: ignore[arg-type]
    except KeeptarError:
        return False
    return is_loadable_scan(scan, images, image.id)


def rewrite_manifest(
    backend: Backend, segments: Sequence[FileSegment], rewrite: Rewrite, file_name: str
) -> str:
    """Store *rewrite*'s tail as one block; return the one-file manifest of the result.

    *segments* are the original archive's bytes in Keep; the result references
    the kept ranges of them and then the new block.
    """
    locator = backend.put_block(memoryview(rewrite.tail))
    parts = slice_segments(segments, rewrite.keep)
    parts.append(FileSegment(locator, 0, len(rewrite.tail)))
    return manifest_from_segments(file_name, parts)


def unloadable_warning(image_id: str, collections: Sequence[str]) -> str:
    """The one-line notice that existing collections of *image_id* are not reused."""
    which = ", ".join(collections)
    return (
        f"image {image_id} is stored in {which} in a form a compute node cannot load "
        "(no manifest.json naming only this image); storing a loadable copy"
    )
