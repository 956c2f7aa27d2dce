"""Docker 25+ ``docker save``: an OCI image layout plus Docker's manifest.json.

Configs and (uncompressed) layers are ``blobs/sha256/<hex>``; manifest.json
points at them, so images are read from it.  index.json and the OCI
manifests are checked too when verifying.  Docker shows the manifest digest
as the image ID on the containerd store, but Arvados needs the config digest,
which is what :attr:`ImageInfo.id` is.
"""

from __future__ import annotations

from keeptar.errors import VerificationError
from keeptar.formats._manifest import images_from_manifest, verify_layers
from keeptar.formats._model import ArchiveFormat, ImageInfo
from keeptar.formats._names import INDEX_JSON, MANIFEST_JSON, OCI_LAYOUT
from keeptar.formats._scan import ArchiveScan

FORMAT = ArchiveFormat.DOCKER_OCI


def detect(scan: ArchiveScan) -> bool:
    """Whether *scan* has manifest.json together with an OCI layout."""
    return scan.has(MANIFEST_JSON) and scan.has(INDEX_JSON) and scan.has(OCI_LAYOUT)


def read_images(scan: ArchiveScan) -> list[ImageInfo]:
    """Return the images manifest.json lists."""
    return images_from_manifest(scan, FORMAT)


def verify(scan: ArchiveScan, images: list[ImageInfo]) -> None:
    """Check layers against diff IDs, and that every OCI manifest names a listed config."""
    from keeptar.formats._oci import parse_descriptor, walk_manifests  # only verify walks them

    for image in images:
        verify_layers(scan, image)
    ids = {image.id for image in images}
    for number, (_, manifest, _name) in enumerate(walk_manifests(scan), 1):
        config = parse_descriptor(manifest.get("config"), what=f"index.json image {number} config")
        if config.digest not in ids:
            raise VerificationError(
                f"index.json image {number} has config {config.digest}, "
                "which manifest.json does not list"
            )
