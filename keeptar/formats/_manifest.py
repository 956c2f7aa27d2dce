"""Reading Docker's ``manifest.json``, shared by every layout that has one.

``manifest.json`` is a JSON list of ``{"Config", "RepoTags", "Layers"}``
objects.  Docker 1.10-24, Docker 25+, containers/image and crane all write it;
they differ only in how they name members, which the layout modules detect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keeptar.errors import ArchiveError, VerificationError
from keeptar.formats._model import ArchiveFormat, ImageInfo, LayerInfo
from keeptar.formats._names import MANIFEST_JSON
from keeptar.formats._scan import ArchiveScan, Member, is_hex64, parse_json
from keeptar.streaming import normalize_member_path

__all__ = ["ManifestItem", "check_archive_path", "images_from_manifest", "read_manifest"]


@dataclass(frozen=True, slots=True)
class ManifestItem:
    """One entry of manifest.json, validated and with normalised paths."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def check_archive_path(value: Any, *, what: str) -> str:
    """Return *value* as a normalised member path, refusing anything that leaves the archive."""
    if not isinstance(value, str) or not value:
        raise ArchiveError(f"{what}: expected a member path, got {value!r}")
    path = normalize_member_path(value)
    if value.startswith("/") or path.startswith("..") or not path or "\x00" in value:
        raise ArchiveError(f"{what}: path {value!r} escapes the archive")
    return path


def read_manifest(scan: ArchiveScan) -> list[ManifestItem]:
    """Parse and validate manifest.json.

    Raises:
        ArchiveError: it is not a non-empty list of well-formed items.
    """
    doc = scan.read_json(MANIFEST_JSON, what="manifest.json")
    if not isinstance(doc, list):
        kind = "null" if doc is None else type(doc).__name__
        raise ArchiveError(f"decoding manifest.json: expected a list of images, got {kind}")
    if not doc:
        raise ArchiveError("manifest.json lists no images")
    items = []
    for number, raw in enumerate(doc, 1):
        what = f"manifest.json item {number}"
        if not isinstance(raw, Mapping):
            raise ArchiveError(f"{what}: expected an object, got {type(raw).__name__}")
        tags = raw.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveError(f"{what}: RepoTags is not a list of strings")
        layers = raw.get("Layers") or []
        if not isinstance(layers, list):
            raise ArchiveError(f"{what}: Layers is not a list")
        items.append(
            ManifestItem(
                config=check_archive_path(raw.get("Config"), what=f"{what} Config"),
                repo_tags=tuple(tags),
                layers=tuple(
                    check_archive_path(layer, what=f"{what} layer {index}")
                    for index, layer in enumerate(layers, 1)
                ),
            )
        )
    return items


def config_name_digest(path: str) -> str | None:
    """The hex digest a config member's name claims (``<hex>.json``, ``sha256:<hex>``…)."""
    base = path.rsplit("/", 1)[-1].removeprefix("sha256:").removesuffix(".json")
    return base if is_hex64(base) else None


def read_config(scan: ArchiveScan, path: str, *, what: str) -> tuple[str, Mapping[str, Any]]:
    """Return ``(image id, parsed config)`` for the config at *path*.

    The ID is ``sha256:`` plus the sha256 of the exact config bytes, and must
    agree with the digest the member's name claims.

    Raises:
        ArchiveError: missing, not JSON, or not an object.
        VerificationError: the bytes do not hash to the name.
    """
    member, data = scan.read_bytes(path, what=what)
    digest = member.sha256 or hashlib.sha256(data).hexdigest()
    claimed = config_name_digest(path) or config_name_digest(member.path)
    if claimed is not None and claimed != digest:
        raise VerificationError(
            f"{what}: {path!r} has sha256 {digest}, not the {claimed} its name claims"
        )
    config = parse_json(data, what=f"{what} ({path})")
    if not isinstance(config, Mapping):
        raise ArchiveError(f"{what}: {path!r} is not a JSON object")
    return "sha256:" + digest, config


def diff_ids_of(config: Mapping[str, Any], *, what: str) -> list[str]:
    """Return ``rootfs.diff_ids`` from *config*, validated."""
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
    if diff_ids is None:
        return []
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ArchiveError(f"{what}: rootfs.diff_ids is not a list of strings")
    return diff_ids


def text_field(config: Mapping[str, Any], key: str) -> str | None:
    """Return ``config[key]`` if it is a string, else None."""
    value = config.get(key)
    return value if isinstance(value, str) else None


def layer_info(member: Member, path: str, diff_id: str | None) -> LayerInfo:
    """Describe a layer member, with its digest if the scan computed one."""
    return LayerInfo(
        path=path,
        size=member.size,
        diff_id=diff_id,
        digest=None if member.sha256 is None else "sha256:" + member.sha256,
    )


def uncompressed_digest(member: Member) -> str | None:
    """``sha256:<hex>`` of the member's uncompressed bytes, if computed."""
    hexdigest = member.uncompressed_sha256 or member.sha256
    return None if hexdigest is None else "sha256:" + hexdigest


def images_from_manifest(scan: ArchiveScan, layout: ArchiveFormat) -> list[ImageInfo]:
    """Build an :class:`ImageInfo` for every manifest.json item.

    Raises:
        ArchiveError: a referenced member is missing or unsafe, or the manifest
            and config disagree on the number of layers.
    """
    images = []
    for number, item in enumerate(read_manifest(scan), 1):
        what = f"image {number}"
        image_id, config = read_config(scan, item.config, what=f"{what} config")
        diff_ids = diff_ids_of(config, what=f"{what} config")
        if diff_ids and len(diff_ids) != len(item.layers):
            raise ArchiveError(
                f"{what}: manifest.json lists {len(item.layers)} layers "
                f"but its config has {len(diff_ids)} diff_ids"
            )
        layers = []
        for index, path in enumerate(item.layers):
            member = scan.resolve(path, what=f"{what} layer {index + 1}")
            layers.append(layer_info(member, path, diff_ids[index] if diff_ids else None))
        images.append(
            ImageInfo(
                format=layout,
                id=image_id,
                created=text_field(config, "created"),
                repo_tags=item.repo_tags,
                architecture=text_field(config, "architecture"),
                os=text_field(config, "os"),
                layers=tuple(layers),
                config_path=item.config,
                config=config,
            )
        )
    return images


def verify_layers(scan: ArchiveScan, image: ImageInfo) -> None:
    """Check every layer's uncompressed sha256 against the config's diff ID.

    Raises:
        VerificationError: a layer's bytes do not match, or a diff ID is missing.
    """
    for index, layer in enumerate(image.layers, 1):
        member = scan.resolve(layer.path, what=f"layer {index}")
        actual = uncompressed_digest(member)
        if layer.diff_id is None:
            raise VerificationError(
                f"image {image.short_id}: layer {index} has no diff ID to check"
            )
        if actual != layer.diff_id:
            raise VerificationError(
                f"image {image.short_id}: layer {index} ({layer.path}) has sha256 "
                f"{actual}, but the config's diff ID is {layer.diff_id}"
            )
