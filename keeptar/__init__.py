"""keeptar: put Docker image archives into Arvados Keep without a Docker daemon.

The importable API::

    from keeptar import inspect_archive
    info = inspect_archive("image.tar")
    print(info.format, info.images[0].id)

    from keeptar import load_archive, open_backend
    result = load_archive(open_backend(), "image.tar")
    print(result.uuid)

The API names are imported on first use, so that ``import keeptar`` (and the
command line's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from keeptar.errors import (
    ArchiveError,
    BackendError,
    ConflictError,
    KeeptarError,
    NotFoundError,
    UsageError,
    VerificationError,
)

if TYPE_CHECKING:
    from keeptar.api import load_archive, load_collection, load_docker_image
    from keeptar.archive import inspect_archive, inspect_source
    from keeptar.backends import open_backend
    from keeptar.formats import ArchiveFormat, ArchiveInfo, ImageInfo, LayerInfo

__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "ArchiveFormat",
    "ArchiveInfo",
    "BackendError",
    "ConflictError",
    "ImageInfo",
    "KeeptarError",
    "LayerInfo",
    "NotFoundError",
    "UsageError",
    "VerificationError",
    "__version__",
    "inspect_archive",
    "inspect_source",
    "load_archive",
    "load_collection",
    "load_docker_image",
    "open_backend",
]

_LAZY = {
    "inspect_archive": "keeptar.archive",
    "inspect_source": "keeptar.archive",
    "load_archive": "keeptar.api",
    "load_collection": "keeptar.api",
    "load_docker_image": "keeptar.api",
    "open_backend": "keeptar.backends",
    "ArchiveFormat": "keeptar.formats",
    "ArchiveInfo": "keeptar.formats",
    "ImageInfo": "keeptar.formats",
    "LayerInfo": "keeptar.formats",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keeptar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
