"""Byte sources: the only place the streaming core performs I/O.

:func:`open_source` turns a path, ``-`` or a binary file object into a
:class:`ByteSource`; :func:`run_tar_stream` reads it, undoes whole-stream
compression, feeds a :class:`~keeptar.streaming.TarReader` and hands every
event to a callback.  Data the consumer skipped is never read from a seekable
file (it is seeked over) and is spliced to ``/dev/null`` from a pipe.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from keeptar.errors import ArchiveError, UsageError
from keeptar.streaming._events import NEED_DATA, ArchiveEnd, Event
from keeptar.streaming._tar import TarReader
from keeptar.streaming.decompress import (
    MAGIC_LENGTH,
    Compression,
    Decompressor,
    detect_compression,
)

__all__ = ["ByteSource", "StreamResult", "open_source", "run_tar_stream"]

READ_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


class ByteSource:
    """A readable byte stream, with what is known about seeking and size.

    Args:
        stream: a binary file object (or anything with ``read``).
        name: how to call it in messages.
        close: whether :meth:`close` closes *stream*.
    """

    def __init__(self, stream: BinaryIO, name: str, *, close: bool = False) -> None:
        self.name = name
        self._stream = stream
        self._close = close
        self._fd: int | None = None
        self.size: int | None = None
        self.seekable = False
        self.is_pipe = False
        with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
            self._fd = stream.fileno()
        if self._fd is not None:
            mode = os.fstat(self._fd).st_mode
            self.is_pipe = stat.S_ISFIFO(mode)
            if stat.S_ISREG(mode):
                self.size = os.fstat(self._fd).st_size
                self.seekable = True
            if self.is_pipe:
                with contextlib.suppress(OSError):
                    import fcntl

                    fcntl.fcntl(self._fd, _F_SETPIPE_SZ, READ_SIZE)
        elif getattr(stream, "seekable", lambda: False)():
            self.seekable = True
            pos = stream.tell()
            self.size = stream.seek(0, os.SEEK_END)
            stream.seek(pos)
        self.position = stream.tell() if self.seekable else 0

    @property
    def fd(self) -> int | None:
        """The OS file descriptor underneath, if there is one."""
        return self._fd

    def read(self, size: int = READ_SIZE) -> bytes:
        """Read up to *size* bytes; ``b""`` at the end."""
        if self._fd is not None and not self.seekable:
            data = os.read(self._fd, size)
        else:
            data = self._stream.read(size)
        self.position += len(data)
        return data

    def skip(self, count: int) -> int:
        """Move *count* bytes forward without handing them over; return how many were skipped."""
        if self.seekable:
            assert self.size is not None
            count = max(0, min(count, self.size - self.position))
            self._stream.seek(self.position + count)
            self.position += count
            return count
        skipped = 0
        if self.is_pipe and self._fd is not None:
            skipped = self._splice_to_null(count)
        while skipped < count:
            data = self.read(min(READ_SIZE, count - skipped))
            if not data:
                break
            skipped += len(data)
        return skipped

    def _splice_to_null(self, count: int) -> int:
        splice = getattr(os, "splice", None)
        if splice is None:
            return 0
        assert self._fd is not None
        done = 0
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            while done < count:
                moved = splice(self._fd, null, min(count - done, 1 << 30))
                if not moved:
                    break
                done += moved
        except OSError:
            pass
        finally:
            os.close(null)
        self.position += done
        return done

    def close(self) -> None:
        """Close the underlying stream if this source opened it."""
        if self._close:
            self._stream.close()


@contextlib.contextmanager
def open_source(target: str | os.PathLike[str] | BinaryIO) -> Iterator[ByteSource]:
    """Open *target* (a path, ``-`` for stdin, or a binary file object) as a :class:`ByteSource`.

    Raises:
        UsageError: the path does not exist, is a directory, or cannot be read.
    """
    if isinstance(target, (str, os.PathLike)):
        path = os.fspath(target)
        if path == "-":
            source = ByteSource(sys.stdin.buffer, "<stdin>")
        else:
            try:
                stream = open(path, "rb")  # noqa: SIM115 - closed by ByteSource.close
            except IsADirectoryError:
                raise UsageError(f"{path} is a directory, not an image archive") from None
            except OSError as exc:
                raise UsageError(f"cannot open {path}: {exc.strerror}") from None
            source = ByteSource(stream, path, close=True)
    else:
        source = ByteSource(target, getattr(target, "name", "<stream>"))
    try:
        yield source
    finally:
        source.close()


@dataclass(frozen=True, slots=True)
class StreamResult:
    """What one pass over a source saw.

    Attributes:
        compression: whole-stream compression found.
        input_bytes: bytes consumed from the source (compressed if compressed),
            skipped ones included.
        tar_bytes: bytes of tar stream up to the end-of-archive marker.
        end: the :class:`ArchiveEnd` event.
    """

    compression: Compression
    input_bytes: int
    tar_bytes: int
    end: ArchiveEnd


def run_tar_stream(
    source: ByteSource,
    handle: Callable[[Event, TarReader], None],
    *,
    tap: Callable[[bytes], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Read *source* to the end of its tar archive, passing every event to *handle*.

    Args:
        source: where the bytes come from.
        handle: called as ``handle(event, reader)``; it may call
            ``reader.skip_data()`` on a :class:`MemberHeader`.
        tap: if given, receives every byte of the decompressed stream, in order
            (trailing bytes after the archive included); nothing is skipped then.
        progress: called with the number of source bytes consumed so far.

    After the archive ends, the rest of the source is read too (drained) unless
    it is a seekable file and there is no tap.

    Raises:
        ArchiveError: the stream is not a readable (possibly compressed) tar.
    """
    reader = TarReader()
    drain = tap is not None or not source.seekable
    first = source.read(READ_SIZE)
    while 0 < len(first) < MAGIC_LENGTH:
        more = source.read(READ_SIZE)
        if not more:
            break
        first += more
    kind = detect_compression(first[:MAGIC_LENGTH])
    if not first:
        raise ArchiveError("empty input: not a tar archive", 0)
    if kind is Compression.NONE:
        return _run_plain(source, reader, handle, first, tap, progress, drain)
    return _run_compressed(source, reader, handle, kind, first, tap, progress, drain)


def _pump(reader: TarReader, handle: Callable[[Event, TarReader], None]) -> ArchiveEnd | None:
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            return None
        handle(event, reader)
        if isinstance(event, ArchiveEnd):
            return event


def _run_plain(
    source: ByteSource,
    reader: TarReader,
    handle: Callable[[Event, TarReader], None],
    chunk: bytes,
    tap: Callable[[bytes], None] | None,
    progress: Callable[[int], None] | None,
    drain: bool,
) -> StreamResult:
    end: ArchiveEnd | None = None
    while True:
        if tap is not None:
            tap(chunk)
        if end is None:
            if chunk:
                reader.feed(chunk)
            else:
                reader.feed_eof()
            end = _pump(reader, handle)
        if progress is not None:
            progress(source.position)
        if not chunk:
            break
        if end is not None and not drain:
            break
        if end is None and tap is None:
            wanted = reader.skippable()
            if wanted:
                reader.skip_input(source.skip(wanted))
        elif end is not None and tap is None:
            source.skip(1 << 62)
            chunk = b""
            continue
        chunk = source.read(READ_SIZE)
    if end is None:  # pragma: no cover - the reader raises before this
        raise ArchiveError("stream ended before the end of the archive", reader.offset)
    return StreamResult(Compression.NONE, source.position, end.offset, end)


def _run_compressed(
    source: ByteSource,
    reader: TarReader,
    handle: Callable[[Event, TarReader], None],
    kind: Compression,
    chunk: bytes,
    tap: Callable[[bytes], None] | None,
    progress: Callable[[int], None] | None,
    drain: bool,
) -> StreamResult:
    decompressor = Decompressor(kind)
    end: ArchiveEnd | None = None
    while True:
        if chunk:
            decompressor.feed(chunk)
        else:
            decompressor.feed_eof()
        while True:
            out = decompressor.next_chunk()
            if out is NEED_DATA:
                break
            if tap is not None and out:
                tap(out)
            if end is None:
                if out:
                    reader.feed(out)
                else:
                    reader.feed_eof()
                end = _pump(reader, handle)
                if end is not None and not drain and tap is None:
                    break
            if not out:
                break
        if progress is not None:
            progress(source.position)
        if not chunk or (end is not None and not drain):
            break
        if end is not None and tap is None:
            # The archive is complete: drain the rest without decompressing it.
            source.skip(1 << 62)  # the drained tail is not checked
            break
        chunk = source.read(READ_SIZE)
    if end is None:
        reader.feed_eof()
        end = _pump(reader, handle)
        if end is None:  # pragma: no cover - the reader raises before this
            raise ArchiveError("stream ended before the end of the archive", reader.offset)
    return StreamResult(kind, source.position, end.offset, end)
