"""Walking an OCI image layout inside an archive: index.json → manifests → blobs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from keeptar.errors import ArchiveError, VerificationError
from keeptar.formats._names import (
    ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME,
    INDEX_JSON,
    MEDIA_DOCKER_LIST,
    MEDIA_OCI_INDEX,
)
from keeptar.formats._scan import ArchiveScan, is_hex64, parse_json

__all__ = ["Descriptor", "blob_path", "parse_descriptor", "walk_manifests"]

_MAX_INDEX_DEPTH = 4


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str]


def parse_descriptor(raw: Any, *, what: str) -> Descriptor:
    """Validate an OCI descriptor (only sha256 digests are accepted)."""
    if not isinstance(raw, Mapping):
        raise ArchiveError(f"{what}: descriptor is not an object")
    digest = raw.get("digest")
    size = raw.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or not is_hex64(digest[7:]):
        raise ArchiveError(f"{what}: unsupported or malformed digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ArchiveError(f"{what}: bad size {size!r}")
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise ArchiveError(f"{what}: annotations is not an object")
    media_type = raw.get("mediaType")
    return Descriptor(
        media_type=media_type if isinstance(media_type, str) else "",
        digest=digest,
        size=size,
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def blob_path(descriptor: Descriptor) -> str:
    """The member path of a descriptor's blob."""
    return "blobs/sha256/" + descriptor.digest[7:]


def read_blob_json(scan: ArchiveScan, descriptor: Descriptor, *, what: str) -> Any:
    """Return a JSON blob, after checking its size and digest."""
    member, data = scan.read_bytes(blob_path(descriptor), what=what)
    if member.size != descriptor.size:
        raise VerificationError(
            f"{what}: {blob_path(descriptor)} is {member.size} bytes, "
            f"descriptor says {descriptor.size}"
        )
    actual = "sha256:" + (member.sha256 or hashlib.sha256(data).hexdigest())
    if actual != descriptor.digest:
        raise VerificationError(
            f"{what}: blob has digest {actual}, descriptor says {descriptor.digest}"
        )
    return parse_json(data, what=f"{what} ({blob_path(descriptor)})")


def image_name(annotations: Mapping[str, str]) -> str | None:
    """The image reference an index entry's annotations give, if any."""
    return annotations.get(ANNOTATION_CONTAINERD_NAME) or annotations.get(ANNOTATION_REF_NAME)


def walk_manifests(scan: ArchiveScan) -> Iterator[tuple[Descriptor, Mapping[str, Any], str | None]]:
    """Yield ``(descriptor, manifest, name)`` for every image manifest index.json reaches.

    Nested indexes (multi-platform images) are followed; attestation
    manifests are left out.  *name* comes from the top-level entry's annotations.
    """
    index = scan.read_json(INDEX_JSON, what="index.json")
    if not isinstance(index, Mapping):
        raise ArchiveError("decoding index.json: expected an object")
    yield from _walk(scan, index, None, "index.json", 0)


def _walk(
    scan: ArchiveScan, index: Mapping[str, Any], name: str | None, what: str, depth: int
) -> Iterator[tuple[Descriptor, Mapping[str, Any], str | None]]:
    if depth > _MAX_INDEX_DEPTH:
        raise ArchiveError(f"{what}: image indexes nested more than {_MAX_INDEX_DEPTH} deep")
    entries = index.get("manifests") or []
    if not isinstance(entries, list):
        raise ArchiveError(f"{what}: manifests is not a list")
    for number, raw in enumerate(entries, 1):
        entry_what = f"{what} entry {number}"
        descriptor = parse_descriptor(raw, what=entry_what)
        if descriptor.annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        entry_name = name if depth else image_name(descriptor.annotations)
        doc = read_blob_json(scan, descriptor, what=entry_what)
        if not isinstance(doc, Mapping):
            raise ArchiveError(f"{entry_what}: manifest is not a JSON object")
        media_type = descriptor.media_type or str(doc.get("mediaType", ""))
        if media_type in (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST) or "manifests" in doc:
            yield from _walk(scan, doc, entry_name, entry_what, depth + 1)
        else:
            yield descriptor, doc, entry_name
