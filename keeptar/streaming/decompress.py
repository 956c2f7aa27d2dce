"""Whole-stream decompression in the same feed/next shape as the tar reader.

:func:`detect_compression` recognises gzip, bzip2, xz and zstd from magic
bytes.  A :class:`Decompressor` is fed compressed bytes and hands back
decompressed chunks of at most ``max_chunk`` bytes each (zstd: at most one
128 KiB block more), so a small input that expands enormously never lands in
memory at once.  A zstd frame needs its window on top: 8 MiB or less unless
made with ``--long`` or ``--ultra``.  :attr:`Decompressor.window_size` says how
large, from the frame header, before any of the frame is decompressed (so a
caller can shrink its own buffers); a window over zstd's default limit,
:data:`MAX_ZSTD_WINDOW` (128 MiB, ``--long=27``), is refused.  Concatenated members
(multi-member gzip, several xz/bzip2 streams, several zstd frames) are all
decompressed, as ``gzip -d`` does; NUL padding after the last member is
ignored.  A stream that ends inside a member raises
:class:`~keeptar.errors.ArchiveError`.
"""

from __future__ import annotations

import enum
import zlib
from collections import deque
from typing import TYPE_CHECKING

from keeptar.errors import ArchiveError
from keeptar.streaming._events import NEED_DATA, NeedData

if TYPE_CHECKING:
    import bz2
    import lzma

__all__ = ["MAX_ZSTD_WINDOW", "Compression", "Decompressor", "detect_compression"]

DEFAULT_MAX_CHUNK = 1 << 20
#: The largest zstd window keeptar decodes: zstd's own default limit (``--long=27``).
MAX_ZSTD_WINDOW = 1 << 27


class Compression(enum.Enum):
    """Whole-stream compression formats keeptar reads."""

    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


_MAGIC = (
    (b"\x1f\x8b", Compression.GZIP),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
)
#: Bytes :func:`detect_compression` needs to decide.
MAGIC_LENGTH = 6


def detect_compression(head: bytes) -> Compression:
    """Return the compression whose magic bytes start *head* (at least 6 bytes if available)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return Compression.NONE


class _ZlibMember:
    def __init__(self) -> None:
        self._obj = zlib.decompressobj(wbits=31)
        self._tail = b""

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._obj.decompress(self._tail + data, max_length)
        self._tail = self._obj.unconsumed_tail
        return out

    @property
    def needs_input(self) -> bool:
        return not self._tail


class _LzmaLikeMember:
    """lzma and bz2 decompressors keep unconsumed input internally."""

    def __init__(self, obj: lzma.LZMADecompressor | bz2.BZ2Decompressor) -> None:
        self._obj = obj

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._obj.decompress(data, max_length)

    @property
    def needs_input(self) -> bool:
        return self._obj.needs_input


class _ZstdBlocks:
    """Where one zstd frame's blocks end (RFC 8878 §3.1.1), read ahead of decompression.

    zstandard's decompressobj has no output cap, but a zstd block regenerates at
    most 128 KiB (Block_Maximum_Size), so input cut after a few whole blocks
    bounds one call's output, whatever the compression ratio: a bomb of 4-byte
    RLE blocks included.  Input is scanned as it arrives; offsets count from the
    start of the frame.  Anything unexpected (a foreign magic number, bytes after
    the frame's end) makes the rest *opaque*: it is then fed 1 KiB at a time,
    which zstd's 32768:1 worst-case expansion still bounds, and the decompressor
    reports whatever is wrong with it.
    """

    def __init__(self) -> None:
        self.known = 0  # the frame's bytes before this offset have been classified
        self._state = "header"  # header | block | skip | opaque
        self._left = 0  # bytes left to pass over in the "skip" state
        self._then = "block"  # the state after the skipped bytes
        self._skipping_block = False  # the skipped bytes are a block's content
        self._checksum = False  # the frame ends with a 4-byte checksum
        self.window = 0  # the largest window a frame header announced so far

    def cut(self, buf: memoryview, base: int, start: int, blocks: int) -> int:
        """An index of *buf* at which to stop feeding: at most *blocks* blocks past *start*.

        ``buf[0]`` is the frame's byte *base*.  Returns *start* when the next
        block header is not all in *buf* yet.
        """
        limit = base + len(buf)
        position = max(self.known, base + start)
        ended = 0
        while ended < blocks and position < limit and self._state != "opaque":
            if self._state == "skip":  # a frame header, a block's content, a checksum
                step = min(self._left, limit - position)
                position += step
                self._left -= step
                if self._left:
                    break
                self._state = self._then
                ended += self._skipping_block
                continue
            size = 5 if self._state == "header" else 3
            if limit - position < size:
                break
            head = bytes(buf[position - base : position - base + size])
            if self._state == "header":
                whole = _header_size(head)
                if limit - position < whole:
                    break
                self._header(bytes(buf[position - base : position - base + whole]))
                continue
            value = int.from_bytes(head, "little")  # Last_Block, Block_Type, Block_Size
            position += 3
            last, kind, length = value & 1, (value >> 1) & 3, value >> 3
            self._left = 1 if kind == 1 else length  # an RLE block holds one byte
            self._state, self._then, self._skipping_block = "skip", "block", True
            if last:  # then the checksum, if any; what follows is the library's to judge
                self._left += 4 if self._checksum else 0
                self._then = "opaque"
        self.known = max(self.known, position)
        if self._state == "opaque":
            return min(len(buf), max(start, self.known - base) + _ZSTD_OPAQUE_SLICE)
        return self.known - base

    def _header(self, head: bytes) -> None:
        """Classify the frame header *head*, all of it (RFC 8878 §3.1.1.1).

        Raises:
            ArchiveError: the frame's window is over :data:`MAX_ZSTD_WINDOW`.
        """
        if head[:4] != b"\x28\xb5\x2f\xfd":
            self._state = "opaque"
            return
        descriptor = head[4]
        self._checksum = bool(descriptor & 0x04)
        window = _window_size(head)
        if window > MAX_ZSTD_WINDOW:
            raise ArchiveError(
                f"zstd frame needs a {_mib(window)} window, over the {_mib(MAX_ZSTD_WINDOW)} "
                "keeptar decodes (zstd's default limit; was it made with --long=28 or more?)"
            )
        self.window = max(self.window, window)
        self._state, self._left, self._then = "skip", len(head), "block"
        self._skipping_block = False


def _header_size(head: bytes) -> int:
    """The size of a zstd frame header from its first 5 bytes (magic, descriptor)."""
    if head[:4] != b"\x28\xb5\x2f\xfd":
        return 5
    descriptor = head[4]
    single_segment = bool(descriptor & 0x20)
    size = 5 + (0 if single_segment else 1)  # magic, descriptor, window descriptor
    size += (0, 1, 2, 4)[descriptor & 0x03]  # dictionary ID
    size += ((1 if single_segment else 0), 2, 4, 8)[descriptor >> 6]  # content size
    return size


def _window_size(head: bytes) -> int:
    """The window a whole zstd frame header announces (its content size if single-segment)."""
    descriptor = head[4]
    if not descriptor & 0x20:
        exponent, mantissa = head[5] >> 3, head[5] & 7
        base = 1 << (10 + exponent)
        return base + (base >> 3) * mantissa
    start = 5 + (0, 1, 2, 4)[descriptor & 0x03]
    width = (1, 2, 4, 8)[descriptor >> 6]
    size = int.from_bytes(head[start : start + width], "little")
    return size + 256 if width == 2 else size


def _mib(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


_ZSTD_OPAQUE_SLICE = 1 << 10
_ZSTD_BLOCKS_PER_CALL = 8


class _ZstdMember:
    """One zstd frame, fed a few whole blocks at a time (see :class:`_ZstdBlocks`).

    Each call regenerates at most ~8 blocks of 128 KiB, even for a bomb; calls
    repeat until *max_length* bytes have come out or the input is used up.  A
    piece that would overshoot *max_length* is returned on its own by the next
    call, never joined to others (which would hold it twice).
    """

    def __init__(self) -> None:
        import zstandard

        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._blocks = _ZstdBlocks()
        self._buf = memoryview(b"")
        self._base = 0  # the frame offset of self._buf[0]
        self._pos = 0
        self._stalled = False  # the next structure's header is not all here yet
        self._held = b""  # a large piece kept for the next call rather than joined

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof) and not self._held

    @property
    def unused_data(self) -> bytes:
        if not self._obj.eof:
            return b""
        return bytes(self._obj.unused_data) + bytes(self._buf[self._pos :])

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if data:
            rest = self._buf[self._pos :]
            self._base += self._pos
            self._buf = memoryview(bytes(rest) + data if len(rest) else data)
            self._pos = 0
            self._stalled = False
        if self._held:
            held, self._held = self._held, b""
            return held
        out: list[bytes] = []
        produced = 0
        while produced < max_length and self._pos < len(self._buf) and not self._obj.eof:
            end = self._blocks.cut(self._buf, self._base, self._pos, _ZSTD_BLOCKS_PER_CALL)
            if end <= self._pos:
                self._stalled = True
                break
            piece = self._buf[self._pos : end]
            self._pos = end
            chunk = self._obj.decompress(piece)
            if not chunk:
                continue
            if out and produced + len(chunk) > max_length:
                self._held = chunk  # joining it would hold it twice
                break
            out.append(chunk)
            produced += len(chunk)
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def needs_input(self) -> bool:
        return (self._pos >= len(self._buf) or self._stalled) and not self._held

    @property
    def window(self) -> int:
        return self._blocks.window


def _new_member(kind: Compression) -> _ZlibMember | _LzmaLikeMember | _ZstdMember:
    if kind is Compression.GZIP:
        return _ZlibMember()
    if kind is Compression.BZIP2:
        import bz2  # imported when used: most archives are plain or gzip

        return _LzmaLikeMember(bz2.BZ2Decompressor())
    if kind is Compression.XZ:
        import lzma

        return _LzmaLikeMember(lzma.LZMADecompressor(format=lzma.FORMAT_XZ))
    if kind is Compression.ZSTD:
        return _ZstdMember()
    raise ValueError(f"no decompressor for {kind}")


class Decompressor:
    """Sans-IO decompressor for one whole stream of *kind* (see module docstring).

    Args:
        kind: the compression format, usually from :func:`detect_compression`.
        max_chunk: the largest chunk :meth:`next_chunk` returns, in bytes.
    """

    def __init__(self, kind: Compression, *, max_chunk: int = DEFAULT_MAX_CHUNK) -> None:
        self.kind = kind
        self._max_chunk = max_chunk
        self._member = _new_member(kind)
        self._between_members = True
        self._seen_member = False
        self._input: deque[bytes] = deque()
        self._eof = False
        self._consumed = 0  # compressed bytes handed to member decompressors
        self._window = 0

    @property
    def window_size(self) -> int:
        """The largest zstd window announced so far (0 for other formats, or none yet)."""
        member = self._member
        if isinstance(member, _ZstdMember):
            self._window = max(self._window, member.window)
        return self._window

    def feed(self, data: bytes) -> None:
        """Give the decompressor the next compressed bytes."""
        if data:
            self._input.append(bytes(data))

    def feed_eof(self) -> None:
        """Tell the decompressor the compressed stream has ended."""
        self._eof = True

    def next_chunk(self) -> bytes | NeedData:
        """Return the next decompressed bytes, or :data:`NEED_DATA`; ``b""`` means the end.

        Raises:
            ArchiveError: the compressed data is corrupt, or ends inside a member.
        """
        name = self.kind.value
        while True:
            member = self._member
            if member.eof:
                rest = member.unused_data
                if rest:
                    self._input.appendleft(rest)
                    self._consumed -= len(rest)
                self._window = self.window_size
                self._between_members = True
                self._member = _new_member(self.kind)
                continue
            if self._between_members:
                started = self._start_next_member()
                if started is None:
                    return NEED_DATA if not self._eof else b""
                continue
            if member.needs_input:
                if not self._input:
                    if not self._eof:
                        return NEED_DATA
                    raise ArchiveError(f"truncated {name} stream", self._consumed)
                data = self._input.popleft()
                self._consumed += len(data)
            else:
                data = b""
            try:
                out = member.decompress(data, self._max_chunk)
            except ArchiveError:
                raise
            except Exception as exc:  # zlib.error, OSError, EOFError, LZMAError, ZstdError
                raise ArchiveError(f"corrupt {name} data: {exc}", self._consumed) from None
            if out:
                return out

    def _start_next_member(self) -> bool | None:
        """Between members: skip NUL padding; return True once a new member starts.

        Returns None when more input (or EOF) is needed to decide.
        """
        while self._input:
            head = self._input[0].lstrip(b"\x00")
            self._consumed += len(self._input[0]) - len(head)
            if head:
                self._input[0] = head
                break
            self._input.popleft()
        if not self._input:
            if self._eof and not self._seen_member:
                raise ArchiveError(f"empty {self.kind.value} stream", self._consumed)
            return None
        head = self._input[0]
        if len(head) < MAGIC_LENGTH and len(self._input) > 1:
            self._input.popleft()
            self._input[0] = head + self._input[0]
            head = self._input[0]
        if len(head) < MAGIC_LENGTH and not self._eof:
            return None
        if detect_compression(head[:MAGIC_LENGTH]) is not self.kind:
            raise ArchiveError(
                f"garbage after the end of the {self.kind.value} stream", self._consumed
            )
        self._between_members = False
        self._seen_member = True
        return True
