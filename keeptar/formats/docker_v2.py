"""Docker 1.10-24 ``docker save``: manifest.json, ``<hex>.json`` configs, ``<id>/layer.tar``.

Layers may be symlinks to another layer dir's ``layer.tar`` (duplicate diff
IDs), possibly sorted before their target.  This is also the fallback for any
archive with a manifest.json that no more specific layout claims.
"""

from __future__ import annotations

from keeptar.formats._manifest import images_from_manifest, verify_layers
from keeptar.formats._model import ArchiveFormat, ImageInfo
from keeptar.formats._names import MANIFEST_JSON
from keeptar.formats._scan import ArchiveScan

FORMAT = ArchiveFormat.DOCKER_V2


def detect(scan: ArchiveScan) -> bool:
    """Whether *scan* has a manifest.json (checked after the more specific layouts)."""
    return scan.has(MANIFEST_JSON)


def read_images(scan: ArchiveScan) -> list[ImageInfo]:
    """Return the images manifest.json lists."""
    return images_from_manifest(scan, FORMAT)


def verify(scan: ArchiveScan, images: list[ImageInfo]) -> None:
    """Check every layer against its config's diff ID."""
    for image in images:
        verify_layers(scan, image)
