"""Member names and JSON keys that image archives use."""

from __future__ import annotations

__all__ = [
    "ANNOTATION_CONTAINERD_NAME",
    "ANNOTATION_REF_NAME",
    "INDEX_JSON",
    "MANIFEST_JSON",
    "OCI_LAYOUT",
    "REPOSITORIES",
]

MANIFEST_JSON = "manifest.json"  #: Docker-style list of {Config, RepoTags, Layers}
INDEX_JSON = "index.json"  #: OCI image index
OCI_LAYOUT = "oci-layout"  #: OCI layout marker
REPOSITORIES = "repositories"  #: {"repo": {"tag": "<top v1 id>"}}
V1_JSON = "json"  #: per-layer v1 JSON inside ``<id>/``
V1_LAYER = "layer.tar"  #: per-layer data inside ``<id>/``
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
