"""Resuming an interrupted load on a store that hands out signed locators (Arvados).

keepstore answers a HEAD only for a locator with a permission signature, and a
client learns signatures only from its own PUTs, so a re-run of a killed load
cannot ask whether a block is stored unless the first run wrote its signed
locators down.  As ``arv-put``'s resume cache does, a :class:`ResumeCache`
records each block's signed locator as soon as it is stored, in a file under
``$XDG_CACHE_HOME/keeptar/resume/`` (default ``~/.cache/keeptar/resume/``),
named by a digest of the cluster, the user, the source file's identity and the
block size.  A re-run then stores only the blocks the cache does not vouch for:
a cached locator is used when its signature is not about to expire and a HEAD
with it finds the block.

Signed locators grant reading the blocks: the directory is 0700, the files 0600,
and no locator from the cache appears in a message.  Each entry is one line
appended with one ``write``; a kill leaves at worst its last line torn, and any
line that is not a whole signed locator is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_VALIDITY", "ResumeCache", "ResumeScope", "resume_directory"]

#: Seconds a cached signature must still be valid for to be used: the collection is
#: created with it after the rest of the upload, and clocks differ.
MIN_VALIDITY = 3600

_HEADER = "keeptar-resume 1"
_MAX_READ = 4 << 20
# md5+size, hints, and a permission hint +A<40 hex>@<8 hex expiry> (as keepstore signs).
_SIGNED = re.compile(
    r"([0-9a-f]{32}\+[0-9]+)((?:\+[B-Z][A-Za-z0-9@_-]*)*)\+A[0-9a-f]{40}@([0-9a-f]{8})"
    r"((?:\+[B-Z][A-Za-z0-9@_-]*)*)"
)


@dataclass(frozen=True, slots=True)
class ResumeScope:
    """Whose signed locators a cache holds.

    Attributes:
        cluster: the API host.
        user: the user's UUID.
        credential: a one-way digest of the token the signatures are bound to (a
            cache written with another token is discarded, never HEADed).
    """

    cluster: str
    user: str
    credential: str


def resume_directory() -> Path:
    """``$XDG_CACHE_HOME/keeptar/resume`` (``~/.cache`` when unset or not absolute)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "keeptar" / "resume"


def _parse(signed: str) -> tuple[str, int] | None:
    """``(md5+size, expiry)`` of a signed locator, or None if it is not one."""
    match = _SIGNED.fullmatch(signed)
    return (match.group(1), int(match.group(3), 16)) if match else None


class ResumeCache:
    """The signed locators one load of one file stored, on disk.

    Args:
        scope: the cluster, user and credential the signatures belong to.
        path: the source file (its real path is part of the key).
        status: its ``os.stat`` at the start of the load.
        block_size: the block size the load cuts the file into.
        head: whether a block is stored, asked with its signed locator (a backend's
            ``has_block``: False only for a definite "not found", an error otherwise).
        directory: where cache files live (default :func:`resume_directory`).

    Reading an unreadable or garbled cache finds nothing; failing to write one
    only loses the resume (the load goes on).
    """

    def __init__(
        self,
        scope: ResumeScope,
        path: str,
        status: os.stat_result,
        block_size: int,
        *,
        head: Callable[[str], bool],
        directory: Path | None = None,
    ) -> None:
        key = json.dumps(
            [
                _HEADER,
                scope.cluster,
                scope.user,
                os.path.realpath(path),
                status.st_dev,
                status.st_ino,
                status.st_size,
                status.st_mtime_ns,
                status.st_ctime_ns,
                block_size,
            ]
        )
        usable = True
        try:
            self.directory = directory if directory is not None else resume_directory()
        except RuntimeError:  # no home directory to hold a cache: no resume
            self.directory, usable = Path(os.devnull), False
        self.path = self.directory / (hashlib.sha256(key.encode()).hexdigest() + ".resume")
        self._header = f"{_HEADER} {scope.credential}\n"
        self._head = head
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._writable = usable
        self._entries: dict[str, str] = {}  # md5+size -> signed locator
        self._unmatched: set[str] = set()
        self._confirmed: set[str] = set()
        self._append = False  # the file on disk is ours to append to
        if usable:
            self._load()

    # ---- reading -----------------------------------------------------------------------

    def _load(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            with os.fdopen(os.dup(fd), "rb") as file:
                # ~90 bytes a 64 MiB block: 4 MiB covers a 2.8 TiB file, within the
                # memory budget whatever the file holds.
                data = file.read(_MAX_READ)
        except OSError:
            return
        finally:
            os.close(fd)
        text = data.decode("ascii", errors="replace")
        if not text.startswith(self._header):
            return  # another format or another token: rewritten from scratch
        self._append = True
        deadline = time.time() + MIN_VALIDITY
        # Only whole lines: the last one may be torn by a kill.
        for line in text[len(self._header) :].split("\n")[:-1]:
            parsed = _parse(line)
            if parsed is not None and parsed[1] >= deadline:
                self._entries[parsed[0]] = line
        self._unmatched = set(self._entries)

    @property
    def entries(self) -> int:
        """Cached locators whose signature is still usable."""
        return len(self._entries)

    @property
    def pending(self) -> bool:
        """Whether some usable cached locator has not been asked for yet (until then
        blocks are hashed before storing, to look them up)."""
        return bool(self._unmatched)

    def stored_locator(self, locator: str) -> str | None:
        """The signed locator to use for block *locator* (``md5+size``) if it is stored.

        A cached locator is checked once with a HEAD; one the store does not hold
        is forgotten, and the block is stored as usual.

        Raises:
            KeeptarError: the HEAD could not be answered (from *head*).
        """
        with self._lock:
            signed = self._entries.get(locator)
            self._unmatched.discard(locator)
            if signed is None:
                return None
            if locator in self._confirmed:
                return signed
        found = self._head(signed)
        with self._lock:
            if found:
                self._confirmed.add(locator)
                return signed
            self._entries.pop(locator, None)
        return None

    # ---- writing -----------------------------------------------------------------------

    def recording(self, put_block: Callable[..., str]) -> Callable[..., str]:
        """*put_block*, recording each signed locator it returns."""

        def put_and_record(data: memoryview, /, *, md5: str | None = None) -> str:
            locator = put_block(data, md5=md5)
            self.record(locator)
            return locator

        return put_and_record

    def record(self, signed: str) -> None:
        """Append *signed* (a block just stored) to the cache file."""
        if _parse(signed) is None:
            return  # unsigned: nothing a re-run could HEAD with
        line = (signed + "\n").encode()
        with self._lock:
            if not self._writable:
                return
            try:
                if self._fd is None:
                    self._fd = self._open_for_append()
                os.write(self._fd, line)  # one write, O_APPEND: never interleaved
            except OSError:
                self._writable = False  # no cache, no resume: the load goes on

    def _open_for_append(self) -> int:
        for folder in (self.directory.parent, self.directory):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700, parents=True)
        if self.directory.stat().st_uid == os.geteuid():
            os.chmod(self.directory, 0o700)
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
        if self._append:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(self.path, flags)
                os.fchmod(fd, 0o600)
                return fd
        # A new file: written whole under a temporary name, then renamed over any old one.
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(temporary, flags | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self._header.encode())
            os.replace(temporary, self.path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._append = True
        return fd

    def close(self) -> None:
        """Stop recording and keep the file (the load failed: a re-run resumes)."""
        with self._lock:
            self._writable = False
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def discard(self) -> None:
        """Stop recording and delete the file (the load succeeded)."""
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
