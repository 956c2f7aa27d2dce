"""containers/image ``docker-archive`` (podman, skopeo, buildah).

Layers are top-level ``<diffid>.tar`` members; legacy ``<id>/layer.tar``
entries are symlinks to them; names are fully qualified (``docker.io/…``).
"""

from __future__ import annotations

import posixpath

from keeptar.formats._manifest import images_from_manifest, read_manifest, verify_layers
from keeptar.formats._model import ArchiveFormat, ImageInfo
from keeptar.formats._names import MANIFEST_JSON
from keeptar.formats._scan import ArchiveScan, is_hex64

FORMAT = ArchiveFormat.DOCKER_ARCHIVE


def detect(scan: ArchiveScan) -> bool:
    """Whether every layer manifest.json names is a top-level ``<64 hex>.tar``."""
    if not scan.has(MANIFEST_JSON):
        return False
    items = read_manifest(scan)
    layers = [layer for item in items for layer in item.layers]
    return bool(layers) and all(
        "/" not in layer and layer.endswith(".tar") and is_hex64(posixpath.splitext(layer)[0])
        for layer in layers
    )


def read_images(scan: ArchiveScan) -> list[ImageInfo]:
    """Return the images manifest.json lists."""
    return images_from_manifest(scan, FORMAT)


def verify(scan: ArchiveScan, images: list[ImageInfo]) -> None:
    """Check every layer against its config's diff ID."""
    for image in images:
        verify_layers(scan, image)
