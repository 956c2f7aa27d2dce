"""A sans-IO tar reader: fed bytes in any chunk sizes, it emits member events.

The reader never reads, seeks or sleeps.  The caller feeds it bytes with
:meth:`TarReader.feed`, signals the end of the stream with
:meth:`TarReader.feed_eof`, and pulls events with :meth:`TarReader.next_event`
until it returns :data:`NEED_DATA`.  When a consumer does not want a member's
data it calls :meth:`TarReader.skip_data`; a seekable source may then jump over
:meth:`TarReader.skippable` bytes itself and report them with
:meth:`TarReader.skip_input`.

It understands ustar, GNU and PAX archives: GNU long names and long links
(``././@LongLink``), PAX extended and global headers (``path``, ``linkpath``,
``size``), base-256 numbers and the ustar ``prefix`` field.  Anything it cannot
trust raises :class:`~keeptar.errors.ArchiveError` naming the byte offset.
"""

from __future__ import annotations

import enum
from collections import deque

from keeptar.errors import ArchiveError, UsageError
from keeptar.streaming._events import (
    NEED_DATA,
    ArchiveEnd,
    MemberData,
    MemberEnd,
    MemberHeader,
    MemberType,
    NeedData,
)

__all__ = ["MAX_MEMBER_SIZE", "TarReader", "normalize_member_path"]

BLOCK = 512
#: Larger member sizes are treated as corruption (16 TiB).
MAX_MEMBER_SIZE = 1 << 44
#: Default cap on GNU long-name and PAX extension data held in memory.
DEFAULT_MAX_META_SIZE = 1 << 20

_ZERO_BLOCK = bytes(BLOCK)
_USTAR_MAGIC = b"ustar\x00"
_GNU_MAGIC = b"ustar  \x00"

_TYPES = {
    b"0": MemberType.FILE,
    b"\x00": MemberType.FILE,
    b"7": MemberType.FILE,
    b"1": MemberType.HARDLINK,
    b"2": MemberType.SYMLINK,
    b"3": MemberType.OTHER,
    b"4": MemberType.OTHER,
    b"5": MemberType.DIRECTORY,
    b"6": MemberType.OTHER,
}
_HEADER_ONLY_TYPES = {b"1", b"2", b"3", b"4", b"5", b"6"}
_LINK_TYPES = (MemberType.HARDLINK, MemberType.SYMLINK)
_META_TYPES = {b"L", b"K", b"x", b"g"}
_UNSUPPORTED_TYPES = {b"S": "GNU sparse", b"M": "GNU multi-volume", b"V": "GNU volume label"}


class _State(enum.Enum):
    HEADER = enum.auto()
    META = enum.auto()
    DATA = enum.auto()
    END = enum.auto()
    ERROR = enum.auto()


def normalize_member_path(name: str) -> str:
    """Return *name* normalised for matching archive members.

    Leading ``./`` and ``/`` go, as do empty and ``.`` components and a
    trailing ``/``; ``a/../b`` folds to ``b``.  A name that climbs above the
    archive root keeps its leading ``..`` components, so callers can refuse it.
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


_OTHER_FORMATS = (
    (b"PK\x03\x04", "a zip file"),
    (b"PK\x05\x06", "an empty zip file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip file"),
    (b"Rar!", "a RAR file"),
    (b"\x89PNG", "a PNG image"),
    (b"%PDF", "a PDF document"),
)


def _not_tar(head: bytes) -> str:
    """Explain why a stream's first bytes are not a tar archive."""
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return f"not a tar archive: this is {what}"
    if len(head) < BLOCK:
        return f"not a tar archive: only {len(head)} bytes, shorter than one tar header"
    return "not a tar archive: the first block is not a valid tar header"


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstring(field: bytes) -> bytes:
    end = field.find(b"\x00")
    return field if end < 0 else field[:end]


class TarReader:
    """Incremental tar parser; see the module docstring for the protocol.

    Args:
        max_meta_size: cap on the size of GNU long-name/long-link and PAX
            extension members, which the reader must hold in memory.
    """

    def __init__(self, *, max_meta_size: int = DEFAULT_MAX_META_SIZE) -> None:
        self._max_meta_size = max_meta_size
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        self._offset = 0  # stream offset of the first buffered byte
        self._eof = False
        self._state = _State.HEADER
        self._member: MemberHeader | None = None
        self._remaining = 0  # data bytes of the current member not yet emitted
        self._padding = 0  # padding bytes after them
        self._discard = False
        self._header_start: int | None = None  # offset of the first extension header
        self._meta_type = b""
        self._meta_size = 0
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._pax: dict[str, bytes] = {}
        self._global_pax: dict[str, bytes] = {}
        self._zero_seen_at: int | None = None
        self._members = 0

    # ---- feeding -----------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Give the reader the next bytes of the stream (not copied: do not modify them)."""
        if self._eof:
            raise UsageError("TarReader.feed() called after feed_eof()")
        if not data:
            return
        if self._state is _State.END:
            return  # bytes after the end-of-archive marker are ignored
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self._chunks.append(view)
        self._buffered += len(view)

    def feed_eof(self) -> None:
        """Tell the reader the stream has ended."""
        self._eof = True

    def skip_data(self) -> None:
        """Discard the current member's remaining data instead of emitting it."""
        if self._state is not _State.DATA:
            raise UsageError("skip_data() is only valid between MemberHeader and MemberEnd")
        self._discard = True

    def skippable(self) -> int:
        """How many bytes past those already fed the reader will discard unseen."""
        if self._state is _State.DATA and self._discard:
            return max(0, self._remaining + self._padding - self._buffered)
        return 0

    def skip_input(self, count: int) -> None:
        """Record that the source skipped *count* bytes that :meth:`skippable` allowed."""
        if count < 0 or count > self.skippable():
            raise UsageError(f"skip_input({count}) exceeds skippable() = {self.skippable()}")
        # Bytes still buffered come first in the stream, then the skipped ones: both
        # count against the member's remaining data, then its padding.
        discarded = self._buffered + count
        self._drop(self._buffered)
        self._offset += count
        taken = min(discarded, self._remaining)
        self._remaining -= taken
        self._padding -= discarded - taken

    @property
    def offset(self) -> int:
        """Stream offset of the next byte the reader will look at."""
        return self._offset

    # ---- events ------------------------------------------------------------------

    def next_event(self) -> MemberHeader | MemberData | MemberEnd | ArchiveEnd | NeedData:
        """Return the next event, or :data:`NEED_DATA` if more input is needed.

        After :class:`ArchiveEnd` it only ever returns :data:`NEED_DATA`.

        Raises:
            ArchiveError: the stream is not a valid tar archive; the reader is
                unusable afterwards.
        """
        if self._state is _State.ERROR:
            raise UsageError("the tar reader already failed")
        try:
            return self._step()
        except ArchiveError:
            self._state = _State.ERROR
            raise

    def _step(self) -> MemberHeader | MemberData | MemberEnd | ArchiveEnd | NeedData:
        while True:
            state = self._state
            if state is _State.DATA:
                event = self._step_data()
                if event is not None:
                    return event
            elif state is _State.HEADER:
                header_event = self._step_header()
                if header_event is not None:
                    return header_event
            elif state is _State.META:
                if not self._step_meta():
                    return NEED_DATA
            else:  # END
                return NEED_DATA

    def _step_data(self) -> MemberData | MemberEnd | NeedData | None:
        member = self._member
        assert member is not None
        if self._remaining:
            if not self._buffered:
                if self._eof:
                    got = member.size - self._remaining
                    raise ArchiveError(
                        f"truncated inside the data of member {member.name!r} "
                        f"({got} of {member.size} bytes)",
                        self._offset,
                    )
                return NEED_DATA
            if self._discard:
                taken = min(self._remaining, self._buffered)
                self._drop(taken)
                self._remaining -= taken
                return None
            chunk = self._chunks[0]
            if len(chunk) <= self._remaining:
                self._chunks.popleft()
                piece = chunk
            else:
                piece = chunk[: self._remaining]
                self._chunks[0] = chunk[self._remaining :]
            taken = len(piece)
            self._buffered -= taken
            self._offset += taken
            self._remaining -= taken
            return MemberData(piece)
        if self._padding:
            if not self._buffered:
                if self._eof:
                    raise ArchiveError(
                        f"truncated in the padding after member {member.name!r}", self._offset
                    )
                return NEED_DATA
            taken = min(self._padding, self._buffered)
            self._drop(taken)
            self._padding -= taken
            return None
        self._state = _State.HEADER
        self._member = None
        self._discard = False
        return MemberEnd(member)

    def _step_header(self) -> MemberHeader | ArchiveEnd | NeedData | None:
        if self._buffered < BLOCK:
            if not self._eof:
                return NEED_DATA
            return self._end_at_eof()
        offset = self._offset
        block = bytes(self._peek(BLOCK))
        if block == _ZERO_BLOCK:
            self._drop(BLOCK)
            if self._pending_extension():
                raise ArchiveError("end-of-archive marker right after an extension header", offset)
            if self._zero_seen_at is None:
                self._zero_seen_at = offset
                return None
            return self._finish()
        if self._zero_seen_at is not None:
            raise ArchiveError("a zero block is followed by a non-zero block", offset)
        self._check_checksum(block, offset)
        self._drop(BLOCK)
        if self._header_start is None:
            self._header_start = offset
        typeflag = block[156:157]
        size = self._parse_size(block, offset)
        if typeflag in _META_TYPES:
            if size > self._max_meta_size:
                raise ArchiveError(
                    f"extension header of {size} bytes exceeds the {self._max_meta_size}-byte cap",
                    offset,
                )
            self._meta_type = typeflag
            self._meta_size = size
            self._state = _State.META
            return None
        if typeflag in _UNSUPPORTED_TYPES:
            raise ArchiveError(f"{_UNSUPPORTED_TYPES[typeflag]} members are not supported", offset)
        return self._start_member(block, typeflag, size, offset)

    def _start_member(self, block: bytes, typeflag: bytes, size: int, offset: int) -> MemberHeader:
        pax = {**self._global_pax, **self._pax}
        if "path" in pax:
            raw_name = pax["path"]
        elif self._long_name is not None:
            raw_name = self._long_name
        else:
            raw_name = _cstring(block[0:100])
            if block[257:263] == _USTAR_MAGIC:
                prefix = _cstring(block[345:500])
                if prefix:
                    raw_name = prefix + b"/" + raw_name
        if "linkpath" in pax:
            raw_link = pax["linkpath"]
        elif self._long_link is not None:
            raw_link = self._long_link
        else:
            raw_link = _cstring(block[157:257])
        if "size" in pax:
            size = self._parse_pax_size(pax["size"], offset)
        name = _decode(raw_name)
        member_type = _TYPES.get(typeflag, MemberType.FILE if typeflag.isalpha() else None)
        if member_type is None:
            raise ArchiveError(f"member {name!r} has unknown type {typeflag!r}", offset)
        if member_type is MemberType.FILE and typeflag == b"\x00" and name.endswith("/"):
            member_type = MemberType.DIRECTORY
        if typeflag in _HEADER_ONLY_TYPES or member_type is MemberType.DIRECTORY:
            size = 0  # as in Go and Python: no data follows, whatever the size field says
        if member_type in (MemberType.HARDLINK, MemberType.SYMLINK) and not raw_link:
            raise ArchiveError(f"link member {name!r} has an empty target", offset)
        start = self._header_start if self._header_start is not None else offset
        self._header_start = None
        self._long_name = self._long_link = None
        self._pax = {}
        member = MemberHeader(
            name=name,
            path=normalize_member_path(name),
            type=member_type,
            size=size,
            linkname=_decode(raw_link) if member_type in _LINK_TYPES else "",
            mode=self._parse_number(block[100:108], "mode", offset),
            header_offset=start,
            data_offset=self._offset,
        )
        self._members += 1
        self._member = member
        self._remaining = size
        self._padding = -size % BLOCK
        self._discard = False
        self._state = _State.DATA
        return member

    def _step_meta(self) -> bool:
        padded = self._meta_size + (-self._meta_size % BLOCK)
        if self._buffered < padded:
            if self._eof:
                raise ArchiveError("truncated inside an extension header", self._offset)
            return False
        offset = self._offset
        data = bytes(self._peek(self._meta_size))
        self._drop(padded)
        kind = self._meta_type
        if kind == b"L":
            self._long_name = _cstring(data)
        elif kind == b"K":
            self._long_link = _cstring(data)
        elif kind == b"x":
            self._pax.update(self._parse_pax(data, offset))
        else:
            self._global_pax.update(self._parse_pax(data, offset))
            # A global header is a member of its own: it does not prefix the next one.
            self._header_start = None
        self._state = _State.HEADER
        return True

    def _end_at_eof(self) -> ArchiveEnd:
        if self._buffered and self._offset == 0:
            raise ArchiveError(_not_tar(bytes(self._peek(self._buffered))), 0)
        if self._buffered:
            raise ArchiveError(
                f"truncated inside a header ({self._buffered} of {BLOCK} bytes)", self._offset
            )
        if self._pending_extension():
            raise ArchiveError("stream ends right after an extension header", self._offset)
        if self._offset == 0:
            raise ArchiveError("empty input: not a tar archive", 0)
        return self._finish()

    def _finish(self) -> ArchiveEnd:
        self._state = _State.END
        self._chunks.clear()
        end = self._offset
        self._offset += self._buffered
        self._buffered = 0
        return ArchiveEnd(offset=end, members=self._members)

    def _pending_extension(self) -> bool:
        return (
            self._long_name is not None
            or self._long_link is not None
            or bool(self._pax)
            or (self._header_start is not None)
        )

    # ---- header fields -----------------------------------------------------------

    def _check_checksum(self, block: bytes, offset: int) -> None:
        first = self._offset == 0 and self._members == 0
        field = block[148:156]
        try:
            stored = int(field.replace(b"\x00", b" ").strip() or b"-1", 8)
        except ValueError:
            stored = -1
        if stored >= 0:
            unsigned = sum(block) - sum(field) + 8 * 0x20
            if stored == unsigned:
                return
            # Some old writers summed the bytes as signed chars.
            high = sum(1 for b in block if b >= 0x80) - sum(1 for b in field if b >= 0x80)
            if stored == unsigned - 256 * high:
                return
        if first:
            raise ArchiveError(_not_tar(block), 0)
        raise ArchiveError("bad tar header checksum", offset)

    def _parse_size(self, block: bytes, offset: int) -> int:
        size = self._parse_number(block[124:136], "size", offset)
        if size > MAX_MEMBER_SIZE:
            raise ArchiveError(f"member size {size} is absurd (over 16 TiB)", offset)
        return size

    @staticmethod
    def _parse_number(field: bytes, what: str, offset: int) -> int:
        if field and field[0] & 0x80:
            if field[0] == 0xFF:
                raise ArchiveError(f"negative base-256 {what} field", offset)
            value = field[0] & 0x7F
            for byte in field[1:]:
                value = (value << 8) | byte
            return value
        text = field.replace(b"\x00", b" ").strip()
        if not text:
            return 0
        try:
            return int(text, 8)
        except ValueError:
            raise ArchiveError(f"bad octal {what} field {bytes(field)!r}", offset) from None

    @staticmethod
    def _parse_pax_size(value: bytes, offset: int) -> int:
        if not value.isdigit():
            raise ArchiveError(f"bad PAX size {value!r}", offset)
        size = int(value)
        if size > MAX_MEMBER_SIZE:
            raise ArchiveError(f"member size {size} is absurd (over 16 TiB)", offset)
        return size

    @staticmethod
    def _parse_pax(data: bytes, offset: int) -> dict[str, bytes]:
        records: dict[str, bytes] = {}
        pos = 0
        while pos < len(data):
            if data[pos] == 0:  # NUL padding after the last record
                break
            space = data.find(b" ", pos)
            if space < 0 or not data[pos:space].isdigit():
                raise ArchiveError("malformed PAX record length", offset)
            length = int(data[pos:space])
            end = pos + length
            if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
                raise ArchiveError("malformed PAX record", offset)
            key, sep, value = data[space + 1 : end - 1].partition(b"=")
            if not sep:
                raise ArchiveError("PAX record without '='", offset)
            text_key = key.decode("utf-8", "surrogateescape")
            if text_key.startswith("GNU.sparse"):
                raise ArchiveError("GNU sparse members are not supported", offset)
            records[text_key] = value
            pos = end
        return records

    # ---- buffer ------------------------------------------------------------------

    def _peek(self, count: int) -> memoryview | bytes:
        first = self._chunks[0]
        if len(first) >= count:
            return first[:count]
        parts = []
        need = count
        for chunk in self._chunks:
            parts.append(chunk[:need])
            need -= len(parts[-1])
            if not need:
                break
        return b"".join(parts)

    def _drop(self, count: int) -> None:
        self._buffered -= count
        self._offset += count
        while count:
            first = self._chunks[0]
            if len(first) <= count:
                self._chunks.popleft()
                count -= len(first)
            else:
                self._chunks[0] = first[count:]
                count = 0
