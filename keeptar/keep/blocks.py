"""Block I/O: writing a stream as Keep blocks, reading byte ranges of stored files.

:class:`BlockWriter` cuts a byte stream into 64 MiB blocks and stores them
through a backend's ``put_block`` on worker threads, so hashing (md5 releases
the GIL) and uploading use both cores while the caller keeps reading.  At most
``in_flight`` finished blocks wait for storage, plus the one being filled, so
memory stays bounded whatever the stream's size.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import mmap
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from keeptar.errors import ArchiveError, BackendError, KeeptarError, NotFoundError
from keeptar.keep.manifest import BLOCK_SIZE, ManifestFile, parse_manifest

if TYPE_CHECKING:
    from keeptar.keep.resume import ResumeCache

__all__ = [
    "MEMORY_BUDGET",
    "BlockWriter",
    "KeepFileReader",
    "PutBlock",
    "StoredStream",
    "read_file_range",
    "store_file",
]


#: The most resident memory ``keeptar load`` may use, whatever the input (README).
MEMORY_BUDGET = 300 << 20
#: Resident memory besides block buffers, copies and a zstd window: the interpreter,
#: its libraries and the Arvados SDK (``benchmarks/bench_zstd_window.py``: ~70 MiB on
#: Arvados, ~45 MiB on the embedded store), with a margin.
BASELINE_MEMORY = 80 << 20
_MIN_BLOCK_SIZE = 1 << 20


class PutBlock(Protocol):
    """Stores one block and returns its locator: a backend's ``put_block``.

    *md5* is the caller's hex md5 of *data* when it has one (the store may skip
    hashing it again), else None.
    """

    def __call__(self, data: memoryview, /, *, md5: str | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredStream:
    """What a finished :class:`BlockWriter` stored: locators in order, total size."""

    locators: tuple[str, ...]
    size: int


class BlockWriter:
    """Store a byte stream as Keep blocks, several blocks at a time.

    Args:
        put_block: stores one block and returns its locator (a backend's
            ``put_block``); called from worker threads.
        block_size: bytes per block (64 MiB in Keep).
        workers: threads storing blocks.
        in_flight: finished blocks allowed to wait for storage at once; 0 stores
            each block on the calling thread, so memory is the one buffer filling.
            :meth:`fit_window` lowers it later.
        progress: called with the number of bytes stored so far.
        detach: the store copies each block anyway (``Backend.stores_in_place`` is
            False): fill one buffer and hand the store private copies.
        is_stored: resume: hash each block first and store only those for which
            ``is_stored("md5+size")`` (a backend's ``has_block``) is False; the others
            keep their unsigned locator.  Only for stores whose ``has_block`` can vouch
            for blocks it did not store in this process (``confirms_stored_blocks``).
            ``put_block`` then gets the md5 (``md5=``).  Hashing
            before storing costs the store its overlap of hashing and writing, so
            after ``FRESH_AFTER_MISSES`` missing blocks in a row the stream is taken
            for a fresh one and the rest is stored without asking (an interrupted
            load stored its blocks in order, two at a time).
        resume: resume with signed locators an interrupted load recorded (a store
            whose ``has_block`` needs them, i.e. Arvados): while the cache holds
            locators not asked for yet, each block is hashed first and one it
            vouches for (:meth:`~keeptar.keep.resume.ResumeCache.stored_locator`) is
            not stored again, its signed locator is used; every block stored is
            recorded in it.  Not with *is_stored*.

    ``skipped_blocks`` counts the blocks *is_stored* or *resume* found.

    Use as a context manager; leaving it by an exception abandons pending blocks.
    """

    def __init__(
        self,
        put_block: PutBlock,
        *,
        block_size: int = BLOCK_SIZE,
        workers: int = 2,
        in_flight: int = 2,
        progress: Callable[[int], None] | None = None,
        detach: bool = False,
        is_stored: Callable[[str], bool] | None = None,
        resume: ResumeCache | None = None,
    ) -> None:
        if is_stored is not None and resume is not None:
            raise ValueError("is_stored and resume exclude each other")
        self._put: PutBlock = put_block if resume is None else resume.recording(put_block)
        self._is_stored = is_stored
        self._resume = resume
        self._misses_in_a_row = 0
        self.skipped_blocks = 0
        self._detach = detach
        self._block_size = block_size
        self._next_block_size = block_size  # takes effect when the next block starts
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keeptar-put")
        # Buffers are allocated once and recycled: in_flight waiting plus one filling.
        # They are anonymous mmaps, so page-aligned: the embedded store can write them
        # with direct I/O.
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        self._allocated = 0
        self._in_flight = in_flight
        self._copies = 0  # private copies (detach) waiting or being stored
        self._slots = threading.Condition()
        self._futures: list[Future[str]] = []
        self._buffer: mmap.mmap | None = None
        self._fill = 0
        self._size = 0
        self._stored = 0
        self._lock = threading.Lock()
        self._progress = progress
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Finished blocks allowed to wait for storage at once."""
        return self._in_flight

    @property
    def block_size(self) -> int:
        """The size of the blocks stored from now on."""
        return self._next_block_size

    def limit_in_flight(self, in_flight: int) -> None:
        """Allow at most *in_flight* blocks in flight from now on (never raises the limit).

        Buffers over the new limit are released as their blocks are stored.
        """
        with self._slots:
            self._in_flight = max(0, min(self._in_flight, in_flight))
            self._slots.notify_all()

    def fit_window(self, window: int) -> None:
        """Make room for a decompressor holding *window* bytes within :data:`MEMORY_BUDGET`.

        Fewer blocks in flight first, then smaller blocks (Keep blocks may be any size
        up to 64 MiB; the change applies from the next block) with at least one block
        in flight so that storing overlaps reading, and only as a last resort none
        (each block stored on the calling thread as soon as it is full).  Never raises
        a limit.
        """
        available = MEMORY_BUDGET - BASELINE_MEMORY - window
        block, in_flight = self._next_block_size, self._in_flight
        choice = None
        size = block
        while choice is None and size >= _MIN_BLOCK_SIZE:
            for count in range(in_flight, 0, -1):
                if self._buffers_needed(count) * size <= available:
                    choice = (size, count)
                    break
            size //= 2
        if choice is None:  # nothing in flight, the largest block that fits
            size = block
            while self._buffers_needed(0) * size > available and size > _MIN_BLOCK_SIZE:
                size //= 2
            choice = (size, 0)
        self.limit_in_flight(choice[1])
        self._next_block_size = choice[0]

    def _buffers_needed(self, in_flight: int) -> int:
        """Blocks held at once: buffers, plus for a detached store its private copies
        (with none in flight, its own copy of the block being stored)."""
        if self._detach:
            return 1 + max(1, in_flight)
        return 1 + in_flight

    def _take_buffer(self) -> mmap.mmap:
        while True:
            try:
                buffer = self._free.get_nowait()
            except queue.Empty:
                break
            if len(buffer) == self._block_size:
                return buffer
            self._discard(buffer)  # from before the block size shrank
        with self._lock:
            allocate = self._allocated < self._in_flight + 1
            if allocate:
                self._allocated += 1
        if allocate:
            return mmap.mmap(-1, self._block_size)
        while True:
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                self._check_failures()

    def _discard(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._allocated -= 1
        buffer.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append *data* to the stream (copied; the caller may reuse it)."""
        view = memoryview(data).cast("B")
        while len(view):
            if self._fill == 0 and self._next_block_size != self._block_size:
                self._block_size = self._next_block_size
                if self._buffer is not None:
                    self._discard(self._buffer)
                    self._buffer = None
            if self._buffer is None:
                self._buffer = self._take_buffer()
                self._fill = 0
            count = min(len(view), self._block_size - self._fill)
            self._buffer[self._fill : self._fill + count] = view[:count]
            self._fill += count
            self._size += count
            view = view[count:]
            if self._fill == self._block_size:
                self._submit()

    def _recycle(self, block: mmap.mmap) -> None:
        """Put a stored block's buffer back, or release it if a limit was lowered."""
        with self._lock:
            release = self._allocated > self._in_flight + 1 or len(block) != self._block_size
            if release:
                self._allocated -= 1
        if release:
            block.close()
        else:
            self._free.put(block)

    def _submit(self) -> None:
        self._check_failures()
        assert self._buffer is not None
        if self._in_flight == 0:
            self._store_here()
            return
        if self._detach:
            # The store copies anyway: give it a private copy now and keep filling the
            # one buffer, so memory is one buffer plus the blocks in flight.
            self._take_copy_slot()
            private = bytes(memoryview(self._buffer)[: self._fill])
            self._fill = 0
            self._futures.append(self._pool.submit(self._store_read, lambda: private))
            return
        block, length = self._buffer, self._fill
        self._buffer, self._fill = None, 0
        self._futures.append(self._pool.submit(self._store, block, length))

    def _store_here(self) -> None:
        """Store the filled buffer on this thread and keep it for the next block."""
        assert self._buffer is not None
        length, self._fill = self._fill, 0
        future: Future[str] = Future()
        try:
            with memoryview(self._buffer) as whole, whole[:length] as view:
                future.set_result(self._put_unless_stored(view))
        except Exception as exc:
            future.set_exception(exc)
            self._futures.append(future)
            self._raise(exc)
        self._futures.append(future)
        self._stored_more(length)

    def _take_copy_slot(self) -> None:
        """Wait until fewer than ``in_flight`` private copies exist, watching for failures."""
        with self._slots:
            while self._copies >= max(1, self._in_flight):
                if not self._slots.wait(timeout=0.5):
                    self._check_failures()
            self._copies += 1

    def _release_copy_slot(self) -> None:
        with self._slots:
            self._copies -= 1
            self._slots.notify_all()

    def _check_whole_blocks(self, method: str) -> None:
        if self._fill:
            raise ValueError(f"{method}() after a partial write()")
        self._check_failures()

    def _store(self, block: mmap.mmap, length: int) -> str:
        try:
            with memoryview(block) as whole, whole[:length] as view:
                locator = self._put_unless_stored(view)
        finally:
            self._recycle(block)
        self._stored_more(length)
        return locator

    def submit_fill(self, fill: Callable[[memoryview], None], length: int) -> None:
        """Store *length* bytes that *fill* writes into one of the writer's buffers.

        Filling and storing happen on a worker; this waits only for a free buffer,
        so memory is the writer's buffers (``in_flight + 1``) whatever the size.
        """
        self._check_whole_blocks("submit_fill")
        buffer = self._take_buffer()
        self._size += length
        self._futures.append(self._pool.submit(self._fill_and_store, buffer, fill, length))

    def _fill_and_store(
        self, buffer: mmap.mmap, fill: Callable[[memoryview], None], length: int
    ) -> str:
        try:
            with memoryview(buffer) as whole, whole[:length] as view:
                fill(view)
        except BaseException:
            self._recycle(buffer)
            raise
        return self._store(buffer, length)

    def submit_read(self, read: Callable[[], bytes], length: int) -> None:
        """Store the block that *read* returns (*length* bytes), reading it on a worker.

        For stores that copy anyway: the block exists only while it is stored.  At
        most ``in_flight`` reads or stores are pending at once.
        """
        self._check_whole_blocks("submit_read")
        self._take_copy_slot()
        self._size += length
        self._futures.append(self._pool.submit(self._store_read, read))

    def _store_read(self, read: Callable[[], bytes]) -> str:
        try:
            data = read()
            locator = self._put_unless_stored(memoryview(data))
        finally:
            self._release_copy_slot()
        self._stored_more(len(data))
        return locator

    def _put_unless_stored(self, view: memoryview) -> str:
        if self._resume is not None:
            if not self._resume.pending:  # nothing left to find: no hashing first
                return self._put(view, md5=None)
            md5 = hashlib.md5(view).hexdigest()
            signed = self._resume.stored_locator(f"{md5}+{len(view)}")
            if signed is not None:
                with self._lock:
                    self.skipped_blocks += 1
                return signed
            return self._put(view, md5=md5)
        if self._is_stored is None or self._misses_in_a_row >= FRESH_AFTER_MISSES:
            return self._put(view, md5=None)
        md5 = hashlib.md5(view).hexdigest()
        locator = f"{md5}+{len(view)}"
        if self._is_stored(locator):
            with self._lock:
                self.skipped_blocks += 1
                self._misses_in_a_row = 0
            return locator
        with self._lock:
            self._misses_in_a_row += 1
        return self._put(view, md5=md5)

    def _stored_more(self, length: int) -> None:
        with self._lock:
            self._stored += length
            stored = self._stored
        if self._progress is not None:
            self._progress(stored)

    def _check_failures(self) -> None:
        for future in self._futures:
            if future.done() and future.exception() is not None:
                self._raise(future.exception())

    @staticmethod
    def _raise(exc: BaseException | None) -> None:
        if isinstance(exc, KeeptarError):
            raise exc
        raise BackendError(f"storing a block failed: {exc}") from exc

    def finish(self) -> StoredStream:
        """Store the last partial block, wait for every block, and return the locators.

        Raises:
            BackendError: a block could not be stored.
        """
        if self._buffer is not None and self._fill:
            self._submit()
        locators = []
        for future in self._futures:
            try:
                locators.append(future.result())
            except Exception as exc:  # a block could not be stored
                self.abort()
                self._raise(exc)
            except BaseException:  # Ctrl-C while waiting: not a storage failure
                self.abort()
                raise
        self._closed = True
        self._pool.shutdown(wait=True)
        return StoredStream(tuple(locators), self._size)

    def abort(self) -> None:
        """Drop pending blocks and stop the workers (blocks already stored stay)."""
        if self._closed:
            return
        self._closed = True
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._buffer = None

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


def read_file_range(
    get_block: Callable[[str], bytes], manifest_text: str, path: str, offset: int, length: int
) -> bytes:
    """Return *length* bytes at *offset* of file *path*, fetching only the blocks needed.

    Reads past the end of the file return what there is.

    Raises:
        NotFoundError: the manifest has no file *path*.
    """
    for item in parse_manifest(manifest_text):
        if item.path == path:
            break
    else:
        raise NotFoundError(f"no file {path!r} in the collection")
    reader = KeepFileReader(get_block, item)
    reader.seek(offset)
    out = bytearray()
    while len(out) < length and (piece := reader.read(length - len(out))):
        out += piece
    return bytes(out)


class KeepFileReader(io.RawIOBase):
    """A seekable, read-only file over one file of a collection.

    Blocks are fetched from the backend only when a read touches them (the
    last two are kept), so a tar reader that seeks over layer data fetches
    only the blocks holding headers and metadata.

    Args:
        get_block: returns a block's bytes by locator (a backend's ``get_block``).
        item: the file, from :func:`~keeptar.keep.parse_manifest`.
        name: how to call it in messages.
    """

    def __init__(
        self, get_block: Callable[[str], bytes], item: ManifestFile, name: str = ""
    ) -> None:
        super().__init__()
        self.name = name or item.path
        self._get_block = get_block
        self._segments = item.segments
        self._starts: list[int] = []
        position = 0
        for segment in item.segments:
            self._starts.append(position)
            position += segment.length
        self._size = position
        self._position = 0
        self._cache: dict[str, bytes] = {}
        self.blocks_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def _block(self, locator: str) -> bytes:
        data = self._cache.get(locator)
        if data is None:
            data = self._get_block(locator)
            self.blocks_fetched += 1
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[locator] = data
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._next_piece(len(view)) as piece:
            view[: len(piece)] = piece
            return len(piece)

    def read(self, size: int | None = -1) -> bytes:
        """Up to *size* bytes (fewer at a segment's end; ``b""`` at the end of the file),
        copied once from the block (``RawIOBase.read`` would copy twice)."""
        if size is None or size < 0:
            return self.readall()
        with self._next_piece(size) as piece:
            return bytes(piece)

    def _next_piece(self, most: int) -> memoryview:
        """A view of the next bytes, at most *most*, within one segment; the position
        moves past them."""
        if self._position >= self._size or most <= 0:
            return memoryview(b"")
        index = bisect.bisect_right(self._starts, self._position) - 1
        segment = self._segments[index]
        within = self._position - self._starts[index]
        count = min(most, segment.length - within)
        start = segment.offset + within
        self._position += count
        return memoryview(self._block(segment.locator))[start : start + count]


def store_file(
    put_block: PutBlock,
    fd: int,
    size: int,
    *,
    detach: bool = False,
    progress: Callable[[int], None] | None = None,
    is_stored: Callable[[str], bool] | None = None,
    resume: ResumeCache | None = None,
    check: Callable[[int, memoryview], None] | None = None,
) -> StoredStream:
    """Store the first *size* bytes of a regular file as Keep blocks, reading each once.

    Each worker reads its own block with ``pread`` and stores it, so reading, hashing
    and storing run on both cores.  For a store that writes from the caller's memory
    (*detach* False) the block is read into one of the writer's recycled page-aligned
    buffers (two in all); for a store that keeps its own copy anyway (*detach* True,
    e.g. KeepClient) it is read into that copy, up to ``DETACHED_IN_FLIGHT`` at once.
    Either way resident memory stays at a few blocks whatever the file's size.

    With *is_stored* (see :class:`BlockWriter`) a re-run of an interrupted load
    stores only the blocks the store does not hold yet: every block is read and
    hashed again, nothing is cached on disk.  With *resume* (see :class:`BlockWriter`)
    the same from signed locators an interrupted load recorded on disk.

    (Not ``mmap``: a file truncated while mapped kills the process with SIGBUS.)

    *check*, if given, is called on the worker as ``check(offset, block)`` with each
    block's bytes as read, before they are stored; an exception it raises fails the
    store (so the caller can insist that what is stored is what it parsed).

    Raises:
        ArchiveError: the file shrank while it was being read.
    """
    if size == 0:
        return StoredStream((), 0)
    workers, in_flight = (DETACHED_IN_FLIGHT, DETACHED_IN_FLIGHT) if detach else (2, 1)
    with BlockWriter(
        put_block,
        workers=workers,
        in_flight=in_flight,
        progress=progress,
        is_stored=is_stored,
        resume=resume,
    ) as writer:
        for start in range(0, size, BLOCK_SIZE):
            length = min(BLOCK_SIZE, size - start)
            if detach:
                read = functools.partial(_pread_all, fd, length, start)
                writer.submit_read(
                    read if check is None else functools.partial(_checked, read, check, start),
                    length,
                )
            else:
                fill = functools.partial(_pread_into, fd, start, check=check)
                writer.submit_fill(fill, length)
        return writer.finish()


DETACHED_IN_FLIGHT = 3


"""Blocks uploaded at once from a file to a store that copies them (3 x 64 MiB)."""

FRESH_AFTER_MISSES = 2
"""Missing blocks in a row after which a resuming writer stops asking (see BlockWriter)."""


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise _shrank(offset + got)
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _checked(
    read: Callable[[], bytes], check: Callable[[int, memoryview], None], offset: int
) -> bytes:
    data = read()
    check(offset, memoryview(data))
    return data


def _pread_into(
    fd: int,
    offset: int,
    view: memoryview,
    *,
    check: Callable[[int, memoryview], None] | None = None,
) -> None:
    got = 0
    while got < len(view):
        count = os.preadv(fd, [view[got:]], offset + got)
        if not count:
            raise _shrank(offset + got)
        got += count
    if check is not None:
        check(offset, view)


def _shrank(at: int) -> ArchiveError:
    return ArchiveError(
        f"the file shrank while it was being stored (at byte {at}): was it being rewritten?"
    )
