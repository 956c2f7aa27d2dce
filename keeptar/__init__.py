"""keeptar: put Docker image archives into Arvados Keep without a Docker daemon.

The importable API::

    from keeptar import inspect_archive
    info = inspect_archive("image.tar")
    print(info.format, info.images[0].id)
"""

from keeptar.archive import inspect_archive, inspect_source
from keeptar.errors import (
    ArchiveError,
    BackendError,
    ConflictError,
    KeeptarError,
    NotFoundError,
    UsageError,
    VerificationError,
)
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
]
