"""Streaming core: the sans-IO tar reader, whole-stream decompression and byte sources.

Only :mod:`keeptar.streaming.sources` performs I/O; the reader and the
decompressors are fed bytes and hand back events or bytes.
"""

from keeptar.streaming._events import (
    NEED_DATA,
    ArchiveEnd,
    Event,
    MemberData,
    MemberEnd,
    MemberHeader,
    MemberType,
    NeedData,
)
from keeptar.streaming._tar import MAX_MEMBER_SIZE, TarReader, normalize_member_path

__all__ = [
    "MAX_MEMBER_SIZE",
    "NEED_DATA",
    "ArchiveEnd",
    "Event",
    "MemberData",
    "MemberEnd",
    "MemberHeader",
    "MemberType",
    "NeedData",
    "TarReader",
    "normalize_member_path",
]
