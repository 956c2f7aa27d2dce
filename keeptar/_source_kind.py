"""The kinds of source ``keeptar load`` reads (``--from``), in a module cheap to import.

:mod:`keeptar.load` re-exports :class:`SourceKind`; it lives here so that the
command line can declare ``--from`` without importing the whole load machinery.
"""

from __future__ import annotations

import enum

__all__ = ["SourceKind"]


class SourceKind(str, enum.Enum):
    """Where ``keeptar load`` reads the image from (``--from``)."""

    FILE = "file"
    STDIN = "stdin"
    ARV_MOUNT = "arv-mount"
    COLLECTION = "collection"
    DOCKER = "docker"
