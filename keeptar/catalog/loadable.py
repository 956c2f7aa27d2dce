"""Storing only what a compute node can load, by reusing blocks already in Keep.

:func:`is_loadable` decides whether an existing image collection may be
reused; :func:`scan_archive` and :func:`rewrite_manifest` store an OCI-only
or multi-image archive as a loadable single-image file made of segments of
the blocks already uploaded plus one small new block (see
:mod:`keeptar.formats.loadable`).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence

from keeptar.backends import Backend
from keeptar.errors import KeeptarError
from keeptar.formats import ArchiveScan, ArchiveScanner, ImageInfo, read_images
from keeptar.formats._manifest import config_name_digest
from keeptar.formats.loadable import Rewrite, is_loadable_scan, plan_rewrite
from keeptar.keep.blocks import KeepFileReader
from keeptar.keep.manifest import (
    FileSegment,
    ManifestFile,
    manifest_from_segments,
    parse_manifest,
)
from keeptar.keep.segments import slice_segments
from keeptar.streaming import normalize_member_path
from keeptar.streaming.sources import ByteSource, run_tar_stream

__all__ = [
    "Rewrite",
    "is_loadable",
    "plan_rewrite",
    "rewrite_manifest",
    "scan_archive",
    "unloadable_warning",
]

#: How much of a stored file's end :func:`is_loadable` looks at first.  Every writer puts
#: manifest.json among the last members (after the layers), well inside this.
TAIL_BYTES = 256 << 10
_BLOCK = 512


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
    image only).

    Reuse is the common path, so the end of the file is looked at first: every
    writer puts manifest.json after the layers, and one Keep block (usually the
    last, small one) answers.  Only if no manifest.json is found there is the
    whole archive scanned (the blocks holding tar headers: for a large image,
    about one block per layer).
    """
    try:
        files = parse_manifest(manifest_text)
    except KeeptarError:
        return False
    tars = [item for item in files if "/" not in item.path and item.path.endswith(".tar")]
    if len(tars) != 1 or tars[0].path != image.file_name:
        return False
    reader = KeepFileReader(backend.get_block, tars[0])
    if not image.format.is_v1:
        try:
            found = _manifest_at_end(reader, tars[0])
        except KeeptarError:
            return False
        verdict = None if found is None else _names_only(found, image.id)
        if verdict is not None:
            return verdict
    try:
        reader.seek(0)
        scan, images = scan_archive(ByteSource(reader, reader.name))  # type: ignore[arg-type]
    except KeeptarError:
        return False
    return is_loadable_scan(scan, images, image.id)


def _manifest_at_end(reader: KeepFileReader, item: ManifestFile) -> bytes | None:
    """The data of the last ``manifest.json`` member among the file's last bytes, if any.

    Tar headers start at multiples of 512 from the start of the file, so the
    tail is read from such an offset and each aligned block is tried as a header.
    A layer's own tar can hold a ``manifest.json`` too (a web app's), at an aligned
    offset: a header counts only if the members from it lead, header by header, to
    the end-of-archive marker and nothing but zeros after it (:func:`_ends_the_archive`).
    """
    start = max(0, item.size - TAIL_BYTES) // _BLOCK * _BLOCK
    reader.seek(start)
    tail = bytearray()
    while piece := reader.read(item.size - start - len(tail)):
        tail += piece
    found: bytes | None = None
    for position in range(0, len(tail) - _BLOCK + 1, _BLOCK):
        info = _header(tail, position)
        if info is None or not info.isreg() or normalize_member_path(info.name) != "manifest.json":
            continue
        data = bytes(tail[position + _BLOCK : position + _BLOCK + info.size])
        if len(data) == info.size and _ends_the_archive(tail, position):
            found = data
    return found


def _header(tail: bytearray, position: int) -> tarfile.TarInfo | None:
    """The ustar header at *position* of *tail*, or None if that block is not one."""
    block = bytes(tail[position : position + _BLOCK])
    if block[:1] == b"\0" or block[257:262] != b"ustar":
        return None
    try:
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return None


def _ends_the_archive(tail: bytearray, position: int) -> bool:
    """Whether the members from the header at *position* run, each header after the
    last one's data, to a zero block with only zeros after it up to the file's end."""
    while position + _BLOCK <= len(tail):
        if not any(tail[position : position + _BLOCK]):
            return not any(tail[position:])
        info = _header(tail, position)
        if info is None:
            return False
        position += _BLOCK + -(-info.size // _BLOCK) * _BLOCK
    return False


def _names_only(manifest: bytes, image_id: str) -> bool | None:
    """Whether manifest.json bytes list exactly one image, the config of *image_id*.

    None when the config's member name claims no digest: only a full scan can tell.
    """
    try:
        doc = json.loads(manifest)
    except (UnicodeDecodeError, ValueError):
        return False
    if not isinstance(doc, list) or len(doc) != 1 or not isinstance(doc[0], dict):
        return False
    config = doc[0].get("Config")
    if not isinstance(config, str):
        return False
    claimed = config_name_digest(normalize_member_path(config))
    return None if claimed is None else claimed == image_id.removeprefix("sha256:")


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
