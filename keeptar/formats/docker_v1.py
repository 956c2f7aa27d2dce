"""Docker <= 1.9 ``docker save`` (v1): ``<id>/VERSION``, ``<id>/json``, ``<id>/layer.tar``.

Each directory is one layer image whose ``json`` names its ``parent``.  The
images are the tops that ``repositories`` tags or, without tags, the leaves
of the parent graph.  A v1 image's ID is its top directory's 64-hex name: it
is not a content digest.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from keeptar.errors import ArchiveError
from keeptar.formats._manifest import layer_info, text_field, uncompressed_digest
from keeptar.formats._model import ArchiveFormat, ImageInfo, LayerInfo
from keeptar.formats._names import INDEX_JSON, MANIFEST_JSON, REPOSITORIES, V1_JSON, V1_LAYER
from keeptar.formats._scan import ArchiveScan, is_hex64

FORMAT = ArchiveFormat.DOCKER_V1


def _layer_ids(scan: ArchiveScan) -> list[str]:
    ids = []
    for path in scan.order:
        head, _, tail = path.partition("/")
        if tail == V1_JSON and is_hex64(head):
            ids.append(head)
    return ids


def detect(scan: ArchiveScan) -> bool:
    """Whether *scan* has ``<id>/json`` members and no manifest.json or index.json."""
    return not scan.has(MANIFEST_JSON) and not scan.has(INDEX_JSON) and bool(_layer_ids(scan))


def read_tags(scan: ArchiveScan, known: Container[str]) -> dict[str, list[str]]:
    """Return ``{top id: ["repo:tag", …]}`` from ``repositories``, in file order.

    Raises:
        ArchiveError: it is not an object of objects, or names an image not in *known*.
    """
    if not scan.has(REPOSITORIES):
        return {}
    doc = scan.read_json(REPOSITORIES, what="repositories")
    if not isinstance(doc, Mapping):
        raise ArchiveError("decoding repositories: expected an object")
    tags: dict[str, list[str]] = {}
    for repo, by_tag in doc.items():
        if not isinstance(by_tag, Mapping):
            raise ArchiveError(f"repositories: {repo!r} does not map tags to IDs")
        for tag, image_id in by_tag.items():
            if not isinstance(image_id, str) or image_id not in known:
                raise ArchiveError(
                    f"repositories: {repo}:{tag} names image {image_id!r}, "
                    "which is not in the archive"
                )
            tags.setdefault(image_id, []).append(f"{repo}:{tag}")
    return tags


def layer_chain(top: str, parents: Mapping[str, str | None]) -> list[str]:
    """Layer IDs from the base to *top*, following *parents* (``{id: parent id or None}``).

    Raises:
        ArchiveError: a parent is missing from *parents*, or the chain loops.
    """
    chain = [top]
    seen = {top}
    parent = parents[top]
    while parent:
        if parent not in parents:
            raise ArchiveError(f"v1 image {chain[-1]} names parent {parent}, not in the archive")
        if parent in seen:
            raise ArchiveError(f"v1 image {top}: parent chain loops at {parent}")
        seen.add(parent)
        chain.append(parent)
        parent = parents[parent]
    chain.reverse()
    return chain


def read_images(scan: ArchiveScan) -> list[ImageInfo]:
    """Return one image per tagged top (or per leaf when nothing is tagged)."""
    ids = _layer_ids(scan)
    configs: dict[str, Mapping[str, Any]] = {}
    parents: dict[str, str | None] = {}
    for layer_id in ids:
        doc = scan.read_json(f"{layer_id}/{V1_JSON}", what=f"v1 image {layer_id}")
        if not isinstance(doc, Mapping):
            raise ArchiveError(f"v1 image {layer_id}: json is not an object")
        stated = doc.get("id")
        if stated is not None and stated != layer_id:
            raise ArchiveError(f"v1 image {layer_id}: json says its id is {stated!r}")
        parent = doc.get("parent") or None
        if parent is not None and not (isinstance(parent, str) and is_hex64(parent)):
            raise ArchiveError(f"v1 image {layer_id}: bad parent {parent!r}")
        configs[layer_id] = doc
        parents[layer_id] = parent
    tags = read_tags(scan, set(ids))
    tops = list(tags) or [i for i in ids if i not in set(filter(None, parents.values()))]
    images = []
    for top in tops:
        layers: list[LayerInfo] = []
        for layer_id in layer_chain(top, parents):
            path = f"{layer_id}/{V1_LAYER}"
            member = scan.resolve(path, what=f"v1 image {layer_id} layer")
            layers.append(layer_info(member, path, uncompressed_digest(member)))
        config = configs[top]
        images.append(
            ImageInfo(
                format=FORMAT,
                id=top,
                created=text_field(config, "created"),
                repo_tags=tuple(tags.get(top, ())),
                architecture=text_field(config, "architecture"),
                os=text_field(config, "os"),
                layers=tuple(layers),
                config_path=f"{top}/{V1_JSON}",
                config=config,
            )
        )
    return images


def verify(scan: ArchiveScan, images: list[ImageInfo]) -> None:
    """v1 archives record no layer digests; reading them fully is the whole check."""
    del scan, images
