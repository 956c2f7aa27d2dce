"""What a compute node can load, and how to make an archive loadable without copying it.

crunch-run loads an image with ``docker load`` or ``singularity build …
docker-archive://``; both follow ``manifest.json`` and load every image it
lists.  So a stored archive must hold a ``manifest.json`` naming exactly the
registered image.  Two kinds of archive do not:

* an OCI-only archive (``index.json``, ``oci-layout``, ``blobs/``): the whole
  archive is kept and a ``manifest.json`` pointing at its ``blobs/sha256/…``
  config and layers is appended, which is Docker 25+'s own layout;
* a multi-image archive: only the chosen image's members (its config, its
  layers with links resolved, and their directory entries) are kept, in
  archive order, followed by a new single-image ``manifest.json`` and
  ``repositories``.

:func:`plan_rewrite` says which byte ranges of the original tar stream to
keep and the small tail to add (new members and the end-of-archive marker),
so the caller can store the result as segments of blocks already in Keep plus
one new block.  Docker v1 archives are left as they are (legacy load).
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keeptar.errors import ArchiveError
from keeptar.formats._model import ImageInfo
from keeptar.formats._names import MANIFEST_JSON, REPOSITORIES
from keeptar.formats._scan import ArchiveScan, Member, is_hex64
from keeptar.streaming import MemberType, normalize_member_path

__all__ = ["Rewrite", "is_loadable_scan", "plan_rewrite", "tail_members"]

_TAR_BLOCK = 512
_END_MARKER = b"\0" * (2 * _TAR_BLOCK)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """How to store one image as a loadable single-image archive.

    Attributes:
        keep: ``(offset, length)`` ranges of the original tar stream to keep, in order.
        tail: bytes to append after them: new tar members and the end marker.
        reason: ``"oci-only"`` (manifest.json appended) or ``"multi-image"``
            (only the chosen image kept).
    """

    keep: tuple[tuple[int, int], ...]
    tail: bytes
    reason: str

    @property
    def size(self) -> int:
        """Size of the rewritten archive."""
        return sum(length for _, length in self.keep) + len(self.tail)


def is_loadable_scan(scan: ArchiveScan, images: Sequence[ImageInfo], image_id: str) -> bool:
    """Whether an archive, as scanned, loads exactly the image *image_id* on a compute node.

    It must have a ``manifest.json`` listing that one image only; a Docker v1
    archive (legacy load, no manifest.json) must hold that one image only.
    """
    if len(images) != 1 or images[0].id != image_id:
        return False
    return images[0].format.is_v1 or scan.has(MANIFEST_JSON)


def plan_rewrite(
    scan: ArchiveScan,
    images: Sequence[ImageInfo],
    image: ImageInfo,
    repo_tags: Sequence[str],
) -> Rewrite | None:
    """Return how to store *image* loadably, or None if the archive is loadable as it is.

    Args:
        scan: the archive's scan (member offsets are needed).
        images: every image in the archive.
        image: the image to store (one of *images*).
        repo_tags: the names being registered; they become the new ``RepoTags``.

    Raises:
        ArchiveError: a member the image needs is missing or not a regular file.
    """
    if image.format.is_v1:
        return None
    if len(images) == 1:
        if scan.has(MANIFEST_JSON):
            return None
        return _append_manifest(scan, image, repo_tags)
    return _single_image(scan, image, repo_tags)


def _append_manifest(scan: ArchiveScan, image: ImageInfo, repo_tags: Sequence[str]) -> Rewrite:
    config = _resolved(scan, image.config_path, "config")
    layers = [_resolved(scan, layer.path, f"layer {n}") for n, layer in enumerate(image.layers, 1)]
    entry = _entry(config.path, repo_tags, [m.path for m in layers])
    tail = tail_members(entry, _repositories(image, repo_tags, layers))
    return Rewrite(keep=((0, scan.body_end),), tail=tail, reason="oci-only")


def _single_image(scan: ArchiveScan, image: ImageInfo, repo_tags: Sequence[str]) -> Rewrite:
    config = _resolved(scan, image.config_path, "config")
    layers = [_resolved(scan, layer.path, f"layer {n}") for n, layer in enumerate(image.layers, 1)]
    entry = _entry(config.path, repo_tags, [m.path for m in layers])
    sources = _layer_sources(scan, image)
    if sources:
        entry["LayerSources"] = sources
    wanted: dict[str, Member] = {}
    for member in [config, *layers]:
        wanted[member.path] = member
        for parent in _parents(member.path):
            found = scan.members.get(parent)
            if found is not None and found.type is MemberType.DIRECTORY:
                wanted[parent] = found
    ordered = sorted(wanted.values(), key=lambda m: m.header.header_offset)
    keep: list[tuple[int, int]] = []
    for member in ordered:
        start = member.header.header_offset
        end = member.header.data_offset + _padded(member.size)
        if keep and keep[-1][0] + keep[-1][1] == start:
            keep[-1] = (keep[-1][0], end - keep[-1][0])
        else:
            keep.append((start, end - start))
    tail = tail_members(entry, _repositories(image, repo_tags, layers))
    return Rewrite(keep=tuple(keep), tail=tail, reason="multi-image")


def _resolved(scan: ArchiveScan, path: str, what: str) -> Member:
    return scan.resolve(path, what=what)


def _parents(path: str) -> list[str]:
    """Directory member paths above *path* (``a/``, ``a/b/``… as normalised: no slash)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _padded(size: int) -> int:
    return -(-size // _TAR_BLOCK) * _TAR_BLOCK


def _entry(config: str, repo_tags: Sequence[str], layers: Sequence[str]) -> dict[str, Any]:
    """A manifest.json item, keys in Docker's order (``RepoTags`` null when untagged)."""
    return {"Config": config, "RepoTags": list(repo_tags) or None, "Layers": list(layers)}


def _layer_sources(scan: ArchiveScan, image: ImageInfo) -> dict[str, Any]:
    """The original manifest.json item's ``LayerSources`` for this image's diff IDs."""
    if not scan.has(MANIFEST_JSON):
        return {}
    doc = scan.read_json(MANIFEST_JSON, what="manifest.json")
    config = scan.resolve(image.config_path, what="config").path
    diff_ids = {layer.diff_id for layer in image.layers}
    for raw in doc if isinstance(doc, list) else []:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("Config"), str):
            continue
        try:
            other = scan.resolve(normalize_member_path(raw["Config"]), what="config").path
        except ArchiveError:
            continue
        sources = raw.get("LayerSources")
        if other == config and isinstance(sources, Mapping):
            return {k: v for k, v in sources.items() if k in diff_ids}
    return {}


def _repositories(
    image: ImageInfo, repo_tags: Sequence[str], layers: Sequence[Member]
) -> dict[str, dict[str, str]] | None:
    """The ``repositories`` document for *repo_tags*: each names the top layer.

    The top layer is its ``<id>/layer.tar`` directory name (Docker <= 24) or its
    diff ID hex (Docker 25+).  None when untagged, as Docker writes none then.
    """
    if not repo_tags or not layers:
        return None
    top = layers[-1].path
    parent = posixpath.dirname(top)
    if posixpath.basename(top) == "layer.tar" and is_hex64(parent):
        value = parent
    else:
        diff_id = image.layers[-1].diff_id or ""
        value = diff_id.removeprefix("sha256:")
    out: dict[str, dict[str, str]] = {}
    for tag in repo_tags:
        repo, _, name = tag.rpartition(":")
        if not repo or "/" in name or "@" in tag:  # no tag, or a digest: no entry
            continue
        out.setdefault(repo, {})[name] = value
    return out or None


def tail_members(entry: Mapping[str, Any], repositories: Mapping[str, Any] | None) -> bytes:
    """``manifest.json`` (one item) and ``repositories`` as tar members, then the end marker.

    JSON is written compact, as Docker writes it; mtime 0 and root ownership.
    """
    out = io.BytesIO()
    files = [(MANIFEST_JSON, json.dumps([entry], separators=(",", ":")).encode())]
    if repositories is not None:
        files.append((REPOSITORIES, json.dumps(repositories, separators=(",", ":")).encode()))
    for name, data in files:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        out.write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))
        out.write(data)
        out.write(b"\0" * (_padded(len(data)) - len(data)))
    out.write(_END_MARKER)
    return out.getvalue()
