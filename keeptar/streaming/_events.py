"""Events the tar reader emits, and the sentinel it returns when it needs more bytes."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "NEED_DATA",
    "ArchiveEnd",
    "Event",
    "MemberData",
    "MemberEnd",
    "MemberHeader",
    "MemberType",
    "NeedData",
]


class NeedData(enum.Enum):
    """Type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event()`` when the reader cannot go on until it is fed more bytes.
NEED_DATA = NeedData.NEED_DATA


class MemberType(enum.Enum):
    """What kind of entry a tar member is."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    OTHER = "other"  # devices, FIFOs, vendor types: never part of an image layout


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberHeader:
    """A member's header, with GNU long names and PAX overrides already applied.

    Attributes:
        name: the name as stored in the archive (decoded as UTF-8, undecodable
            bytes kept as surrogates).
        path: ``name`` normalised for matching: no leading ``./`` or ``/``, no
            ``.`` components, ``a/../b`` folded; a name that climbs out of the
            archive keeps its leading ``..``.
        type: the member type.
        size: bytes of data that follow the header (0 for links and directories).
        linkname: the link target as stored (symlinks and hardlinks), else ``""``.
        header_offset: stream offset of the member's first header block
            (including any GNU or PAX extension headers before it).
        data_offset: stream offset of the member's first data byte.
    """

    name: str
    path: str
    type: MemberType
    size: int
    linkname: str
    mode: int
    header_offset: int
    data_offset: int


@dataclass(frozen=True, slots=True)
class MemberData:
    """A piece of the current member's data, in stream order.

    ``data`` is a view into a buffer the caller fed; it stays valid as long as
    the caller does not modify that buffer.
    """

    data: memoryview


@dataclass(frozen=True, slots=True)
class MemberEnd:
    """The current member's data is complete."""

    member: MemberHeader


@dataclass(frozen=True, slots=True)
class ArchiveEnd:
    """The end-of-archive marker was read (or the stream ended at a member boundary).

    Attributes:
        offset: stream offset just after the end marker; anything fed after it
            is trailing data and is ignored.
        members: how many members the archive held (extension headers not counted).
    """

    offset: int
    members: int


Event = MemberHeader | MemberData | MemberEnd | ArchiveEnd
