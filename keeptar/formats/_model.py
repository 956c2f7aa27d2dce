"""The common description every layout reader produces."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ArchiveFormat", "ArchiveInfo", "ImageInfo", "LayerInfo"]


class ArchiveFormat(str, enum.Enum):
    """Archive layouts keeptar reads."""

    DOCKER_V1 = "docker-v1"  #: Docker <= 1.9 ``docker save``: ``<id>/json``, no manifest.json
    DOCKER_V2 = "docker-v2"  #: Docker 1.10-24 ``docker save``: manifest.json + ``<hex>.json``
    DOCKER_OCI = "docker-oci"  #: Docker 25+ ``docker save``: OCI layout plus manifest.json
    DOCKER_ARCHIVE = "docker-archive"  #: podman, skopeo, buildah ``docker-archive:``
    CRANE = "crane"  #: go-containerregistry / crane tarball
    OCI_ARCHIVE = "oci-archive"  #: plain OCI image layout: index.json, no manifest.json

    @property
    def is_v1(self) -> bool:
        """Whether images in this layout have Docker v1 (bare hex, non-content) IDs."""
        return self is ArchiveFormat.DOCKER_V1


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerInfo:
    """One layer, base layer first.

    Attributes:
        path: the member holding the layer, normalised, links followed.
        size: the member's size in bytes (compressed if the layer is compressed).
        diff_id: ``sha256:<hex>`` of the uncompressed layer, from the config
            (v2/OCI) or computed (v1, when digests were computed).
        digest: ``sha256:<hex>`` of the member bytes, when digests were computed.
    """

    path: str
    size: int
    diff_id: str | None = None
    digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form used by ``keeptar inspect --json``."""
        out: dict[str, Any] = {"path": self.path, "size": self.size, "diff_id": self.diff_id}
        if self.digest is not None:
            out["digest"] = self.digest
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInfo:
    """One image in an archive.

    Attributes:
        format: the archive layout it came from.
        id: ``sha256:<hex>`` of the config bytes (v2, OCI), or the top image's
            64-hex ID (v1).  This is the name Arvados gives the stored file.
        created: the config's ``created`` value exactly as written, if any.
        repo_tags: ``repo:tag`` names the archive gives the image.
        architecture: from the config.
        os: from the config.
        layers: base layer first.
        config_path: the member holding the config (``<id>/json`` for v1).
        config: the parsed config.
    """

    format: ArchiveFormat
    id: str
    created: str | None
    repo_tags: tuple[str, ...]
    architecture: str | None
    os: str | None
    layers: tuple[LayerInfo, ...]
    config_path: str
    config: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def short_id(self) -> str:
        """The 12 hex digits Docker shows, without ``sha256:``."""
        return self.id.removeprefix("sha256:")[:12]

    @property
    def file_name(self) -> str:
        """The file name Arvados stores the image under: ``<id>.tar``."""
        return f"{self.id}.tar"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form used by ``keeptar inspect --json``."""
        return {
            "id": self.id,
            "created": self.created,
            "repo_tags": list(self.repo_tags),
            "architecture": self.architecture,
            "os": self.os,
            "config_path": self.config_path,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveInfo:
    """Everything one pass learned about an archive.

    Attributes:
        format: the layout.
        compression: whole-stream compression (``"none"`` if plain).
        images: the images, in the order the archive lists them.
        tar_bytes: size of the (decompressed) tar stream up to its end marker.
        verified: whether every digest was computed and checked.
        warnings: what ``docker load`` would refuse or read differently in the
            archive (see :mod:`keeptar.formats._unpack`); ``load`` refuses such
            an archive.
    """

    format: ArchiveFormat
    compression: str
    images: tuple[ImageInfo, ...]
    tar_bytes: int
    verified: bool = False
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the JSON document ``keeptar inspect --json`` prints."""
        return {
            "format": self.format.value,
            "compression": self.compression,
            "verified": self.verified,
            "images": [image.to_json() for image in self.images],
            **({"warnings": list(self.warnings)} if self.warnings else {}),
        }
