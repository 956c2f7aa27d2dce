"""Archive layouts: each module turns a scanned archive into :class:`ImageInfo` values.

=====================  ===========================================================
module                 layout
=====================  ===========================================================
``docker_oci``         Docker 25+ save: OCI layout plus manifest.json
``crane``              go-containerregistry tarball: ``sha256:<hex>`` config
``docker_archive``     podman/skopeo/buildah: top-level ``<diffid>.tar`` layers
``docker_v2``          Docker 1.10-24 save (and any other manifest.json archive)
``oci_archive``        OCI layout with no manifest.json
``docker_v1``          Docker <= 1.9 save: ``<id>/json`` directories
=====================  ===========================================================

:func:`read_images` asks each in that order (:func:`detect_layout`) and lets
the first that claims the archive build the images.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from keeptar.errors import ArchiveError
from keeptar.formats._model import ArchiveFormat, ArchiveInfo, ImageInfo, LayerInfo
from keeptar.formats._scan import ArchiveScan, ArchiveScanner

__all__ = [
    "ArchiveFormat",
    "ArchiveInfo",
    "ArchiveScan",
    "ArchiveScanner",
    "ImageInfo",
    "LayerInfo",
    "detect_layout",
    "read_images",
]

#: The layout modules in the order they are asked, by name: each is imported
#: only when the ones before it have declined (start-up, tests/test_startup.py).
LAYOUTS: tuple[str, ...] = (
    "docker_oci",
    "crane",
    "docker_archive",
    "docker_v2",
    "oci_archive",
    "docker_v1",
)


def detect_layout(scan: ArchiveScan) -> ModuleType:
    """Return the layout module that claims *scan*.

    Raises:
        ArchiveError: no layout does (for example a tar of ordinary files).
    """
    for name in LAYOUTS:
        layout = importlib.import_module(f"keeptar.formats.{name}")
        if layout.detect(scan):
            return layout
    files = scan.regular_paths()
    example = ", ".join(repr(p) for p in files[:3]) or "no files"
    raise ArchiveError(
        "not a container image archive: no manifest.json, index.json or <id>/json "
        f"among its {len(scan.order)} members ({example})"
    )


def read_images(
    scan: ArchiveScan, *, verify: bool = False
) -> tuple[ArchiveFormat, list[ImageInfo]]:
    """Detect the layout of *scan* and return its format and images.

    Args:
        scan: a completed scan.
        verify: also check every layer digest; the scan must have hashed every
            member (``ArchiveScanner(digest=True)``).

    Raises:
        ArchiveError: the archive is malformed or hostile.
        VerificationError: with *verify*, a digest does not match.
        ValueError: *verify* on a scan made without hashing (a caller's mistake).
    """
    if verify and not scan.digested:
        raise ValueError(
            "read_images(verify=True) needs a scan made with ArchiveScanner(digest=True); "
            "this one skipped layer data unhashed"
        )
    layout = detect_layout(scan)
    images: list[ImageInfo] = layout.read_images(scan)
    if verify:
        layout.verify(scan, images)
    return layout.FORMAT, images
