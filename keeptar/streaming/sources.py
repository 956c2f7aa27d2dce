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
#: Read after seeking over a member's data: the next header and small metadata members
#: (a layer's data is skipped again, so a whole READ_SIZE would mostly be read for nothing).
READ_AFTER_SKIP = 64 << 10
#: Most input read from a pipe after the end of the archive before giving up on it.
DRAIN_LIMIT = 16 << 20
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
        self.is_socket = False
        #: if set, called as ``on_read(offset, data)`` with every chunk :meth:`read` returns
        self.on_read: Callable[[int, bytes], None] | None = None
        with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
            self._fd = stream.fileno()
        if self._fd is not None:
            mode = os.fstat(self._fd).st_mode
            self.is_pipe = stat.S_ISFIFO(mode)
            self.is_socket = stat.S_ISSOCK(mode)
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
        if self.on_read is not None and data:
            self.on_read(self.position, data)
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
    on_window: Callable[[int], None] | None = None,
) -> StreamResult:
    """Read *source* to the end of its tar archive, passing every event to *handle*.

    Args:
        source: where the bytes come from.
        handle: called as ``handle(event, reader)``; it may call
            ``reader.skip_data()`` on a :class:`MemberHeader`.
        tap: if given, receives every byte of the decompressed stream, in order
            (trailing bytes after the archive included); nothing is skipped then.
        progress: called with the number of source bytes consumed so far.
        on_window: called with a zstd stream's window size (the largest so far)
            when a frame header announces a larger one, before that frame's
            bytes reach *tap*: a caller can shrink its own buffers.

    After the archive ends, the rest of the source is read too (drained) when it
    is a real pipe or socket, so its writer does not fail on a closed pipe, or a
    regular file when there is a tap; never a character device such as
    ``/dev/zero``.  A stream is drained for at most :data:`DRAIN_LIMIT` bytes.

    Raises:
        ArchiveError: the stream is not a readable (possibly compressed) tar, or
            goes on for more than :data:`DRAIN_LIMIT` bytes after its end.
    """
    reader = TarReader()
    drain = source.is_pipe or source.is_socket or (tap is not None and source.seekable)
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
    return _run_compressed(source, reader, handle, kind, first, tap, progress, drain, on_window)


def _skip_rest(source: ByteSource) -> None:
    """Drain what follows the archive: all of a file, at most DRAIN_LIMIT of a stream."""
    if source.seekable:
        source.skip(1 << 62)
        return
    start = source.position
    source.skip(DRAIN_LIMIT + 1)
    _check_drained(source, start)


def _check_drained(source: ByteSource, start: int) -> None:
    if not source.seekable and source.position - start > DRAIN_LIMIT:
        raise _endless(source)


def _endless(source: ByteSource) -> ArchiveError:
    return ArchiveError(
        f"{source.name}: more than {DRAIN_LIMIT >> 20} MiB of data after the end of "
        "the archive (is the input endless?)"
    )


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
    ended_at = 0  # the source position when the archive's end was seen
    while True:
        if tap is not None:
            tap(chunk)
        if end is None:
            if chunk:
                reader.feed(chunk)
            else:
                reader.feed_eof()
            end = _pump(reader, handle)
            ended_at = source.position
        else:
            _check_drained(source, ended_at)
        if progress is not None:
            progress(source.position)
        if not chunk:
            break
        if end is not None and not drain:
            break
        size = READ_SIZE
        if end is None and tap is None:
            wanted = reader.skippable()
            if wanted:
                reader.skip_input(source.skip(wanted))
                size = READ_AFTER_SKIP
        elif end is not None and tap is None:
            _skip_rest(source)
            chunk = b""
            continue
        chunk = source.read(size)
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
    on_window: Callable[[int], None] | None = None,
) -> StreamResult:
    decompressor = Decompressor(kind)
    window = 0
    end: ArchiveEnd | None = None
    ended_at = 0  # the source position when the archive's end was seen
    after = 0  # decompressed bytes after the archive's end
    while True:
        if end is not None:
            _check_drained(source, ended_at)
        if chunk:
            decompressor.feed(chunk)
        else:
            decompressor.feed_eof()
        while True:
            out = decompressor.next_chunk()
            if on_window is not None and decompressor.window_size > window:
                window = decompressor.window_size
                on_window(window)
            if out is NEED_DATA:
                break
            if tap is not None and out:
                if end is not None:  # bytes after the archive: stored, so bounded too
                    after += len(out)
                    if after > DRAIN_LIMIT:
                        raise _endless(source)
                tap(out)
            if end is None:
                if out:
                    reader.feed(out)
                else:
                    reader.feed_eof()
                end = _pump(reader, handle)
                ended_at = source.position
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
            _skip_rest(source)  # the drained tail is not checked
            break
        chunk = source.read(READ_SIZE)
    if end is None:
        reader.feed_eof()
        end = _pump(reader, handle)
        if end is None:  # pragma: no cover - the reader raises before this
            raise ArchiveError("stream ended before the end of the archive", reader.offset)
    return StreamResult(kind, source.position, end.offset, end)
