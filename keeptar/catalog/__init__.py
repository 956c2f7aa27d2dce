"""The image catalog: finding, naming and registering Docker images in a backend.

The #9045 API (Arvados story #9045, note 7)::

    from keeptar.backends import open_backend
    from keeptar.catalog import search_images, find_or_create_image
    best = search_images(open_backend(), "ubuntu:22.04")[0]
"""

from keeptar.catalog.publish import (
    add_image_hash,
    add_image_metadata,
    add_image_name,
    ensure_image,
    find_or_create_image,
    resolve_image,
)
from keeptar.catalog.search import (
    ImageMatch,
    best_image,
    search_images,
    search_images_by_hash,
    search_images_by_name,
)

__all__ = [
    "ImageMatch",
    "add_image_hash",
    "add_image_metadata",
    "add_image_name",
    "best_image",
    "ensure_image",
    "find_or_create_image",
    "resolve_image",
    "search_images",
    "search_images_by_hash",
    "search_images_by_name",
]
