"""Plain OCI image layout archives (``podman save --format oci-archive``, ``skopeo oci-archive:``).

There is no manifest.json: images come from index.json, through image
manifests, to config and layer blobs, which are usually gzip-compressed.
"""

from __future__ import annotations

import posixpath

from keeptar.errors import ArchiveError, VerificationError
from keeptar.formats._manifest import (
    diff_ids_of,
    layer_info,
    read_config,
    text_field,
    verify_layers,
)
from keeptar.formats._model import ArchiveFormat, ImageInfo
from keeptar.formats._names import INDEX_JSON, MANIFEST_JSON, OCI_LAYOUT
from keeptar.formats._oci import blob_path, parse_descriptor, walk_manifests
from keeptar.formats._scan import ArchiveScan

FORMAT = ArchiveFormat.OCI_ARCHIVE


def detect(scan: ArchiveScan) -> bool:
    """Whether *scan* is an OCI layout without a Docker manifest.json."""
    return scan.has(INDEX_JSON) and scan.has(OCI_LAYOUT) and not scan.has(MANIFEST_JSON)


def read_images(scan: ArchiveScan) -> list[ImageInfo]:
    """Return one image per image manifest that index.json reaches."""
    images = []
    for number, (_, manifest, name) in enumerate(walk_manifests(scan), 1):
        what = f"image {number}"
        config_desc = parse_descriptor(manifest.get("config"), what=f"{what} config")
        image_id, config = read_config(scan, blob_path(config_desc), what=f"{what} config")
        if image_id != config_desc.digest:
            raise VerificationError(f"{what}: config digest {image_id} != {config_desc.digest}")
        raw_layers = manifest.get("layers") or []
        if not isinstance(raw_layers, list):
            raise ArchiveError(f"{what}: manifest layers is not a list")
        diff_ids = diff_ids_of(config, what=f"{what} config")
        if diff_ids and len(diff_ids) != len(raw_layers):
            raise ArchiveError(
                f"{what}: manifest lists {len(raw_layers)} layers "
                f"but its config has {len(diff_ids)} diff_ids"
            )
        layers = []
        for index, raw in enumerate(raw_layers):
            layer_what = f"{what} layer {index + 1}"
            descriptor = parse_descriptor(raw, what=layer_what)
            member = scan.resolve(blob_path(descriptor), what=layer_what)
            if member.size != descriptor.size:
                raise ArchiveError(
                    f"{layer_what}: blob is {member.size} bytes, manifest says {descriptor.size}"
                )
            layers.append(
                layer_info(member, blob_path(descriptor), diff_ids[index] if diff_ids else None)
            )
        images.append(
            ImageInfo(
                format=FORMAT,
                id=image_id,
                created=text_field(config, "created"),
                repo_tags=(name,) if name else (),
                architecture=text_field(config, "architecture"),
                os=text_field(config, "os"),
                layers=tuple(layers),
                config_path=blob_path(config_desc),
                config=config,
            )
        )
    if not images:
        raise ArchiveError("index.json lists no images")
    return images


def verify(scan: ArchiveScan, images: list[ImageInfo]) -> None:
    """Check layer blobs against their digests and the config's diff IDs."""
    for image in images:
        for index, layer in enumerate(image.layers, 1):
            named = "sha256:" + posixpath.basename(layer.path)
            if layer.digest is not None and layer.digest != named:
                raise VerificationError(
                    f"image {image.short_id}: layer {index} blob has digest {layer.digest}, "
                    f"not the {named} its descriptor names"
                )
        verify_layers(scan, image)
