"""go-containerregistry (crane) tarballs: config ``sha256:<hex>``, compressed layers.

Layers are ``<digest>.tar.gz`` (or ``.tar.zst``) as pushed to a registry, so a
layer's member digest is its compressed digest; its diff ID is checked after
decompression.
"""

from __future__ import annotations

from keeptar.formats._manifest import images_from_manifest, read_manifest, verify_layers
from keeptar.formats._model import ArchiveFormat, ImageInfo
from keeptar.formats._names import MANIFEST_JSON
from keeptar.formats._scan import ArchiveScan

FORMAT = ArchiveFormat.CRANE


def detect(scan: ArchiveScan) -> bool:
    """Whether manifest.json names its configs ``sha256:<hex>``."""
    if not scan.has(MANIFEST_JSON):
        return False
    return all(item.config.startswith("sha256:") for item in read_manifest(scan))


def read_images(scan: ArchiveScan) -> list[ImageInfo]:
    """Return the images manifest.json lists."""
    return images_from_manifest(scan, FORMAT)


def verify(scan: ArchiveScan, images: list[ImageInfo]) -> None:
    """Check every (decompressed) layer against its config's diff ID."""
    for image in images:
        verify_layers(scan, image)
