"""Garbage collection for the embedded store, in the spirit of Arvados's keep-balance.

A block is deleted when no collection in the catalog names it and its file is
older than the grace period (by modification time: when it was last written).
A failed or interrupted load leaves such blocks behind, and so does a load whose
image turned out to be stored already under other blocks.

Safe against loads running at the same time: every process that writes blocks
or creates collections holds a shared lock on ``KEEPTAR_HOME/writers.lock``
from its first block until it ends (:meth:`EmbeddedBackend.hold_writer_lock`),
and :func:`collect_garbage` holds it exclusively while it reads the catalog and
deletes.  So a block a load has written but not yet registered is never seen
here, whatever the grace period, and a collection created after the catalog was
read finds a deleted block missing instead of naming it.

On Arvados, keep-balance does this for the cluster; keeptar does not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keeptar.backends.embedded import WRITERS_LOCK, EmbeddedBackend, _process_exists
from keeptar.errors import BackendError, ConflictError, UsageError
from keeptar.keep.manifest import Locator, parse_manifest

__all__ = ["DEFAULT_GRACE", "GcReport", "collect_garbage", "parse_duration"]

DEFAULT_GRACE = "2w"
"""Default grace period: keep-balance's default ``BlobSigningTTL`` is two weeks too."""

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw]?)")
_MD5_NAME = re.compile(r"[0-9a-f]{32}")


def parse_duration(text: str) -> int:
    """Seconds in *text*: a whole number with an optional unit, s, m, h, d or w.

    ``0``, ``3600``, ``3600s``, ``90m``, ``12h``, ``3d`` and ``2w`` are accepted.

    Raises:
        UsageError: anything else.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(
            f"bad duration {text!r}: give a whole number of seconds, or one with a unit "
            "s, m, h, d or w (e.g. 0, 3600s, 12h, 2w)"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(slots=True)
class GcReport:
    """What :func:`collect_garbage` did (or, with ``dry_run``, would do).

    Counts are blocks and bytes; ``deleted_*`` are unreferenced blocks past the grace
    period, ``recent_*`` unreferenced ones still inside it, ``referenced_*`` those a
    collection names.  ``stale_temporary_files`` are half-written blocks of dead
    processes, removed too.
    """

    dry_run: bool
    grace_seconds: int
    deleted_blocks: int = 0
    deleted_bytes: int = 0
    recent_blocks: int = 0
    recent_bytes: int = 0
    referenced_blocks: int = 0
    referenced_bytes: int = 0
    stale_temporary_files: int = 0
    deleted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``keeptar gc --json`` document."""
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "deleted": {"blocks": self.deleted_blocks, "bytes": self.deleted_bytes},
            "kept_recent": {"blocks": self.recent_blocks, "bytes": self.recent_bytes},
            "kept_referenced": {"blocks": self.referenced_blocks, "bytes": self.referenced_bytes},
            "stale_temporary_files": self.stale_temporary_files,
            "deleted_locators": self.deleted,
        }


@contextlib.contextmanager
def _exclusive(store: EmbeddedBackend, wait: float) -> Iterator[None]:
    """Hold the writers' lock exclusively: no load is between its first block and its end."""
    path = store.home / WRITERS_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BackendError(f"cannot use {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise BackendError(f"locking {path}: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                raise ConflictError(
                    f"another keeptar process is writing to {store.home} (it holds "
                    f"{WRITERS_LOCK}); run gc again when it has finished"
                )
            time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def collect_garbage(
    store: EmbeddedBackend, *, grace_seconds: int, dry_run: bool = False, wait: float = 60.0
) -> GcReport:
    """Delete the store's blocks that no collection names and that are older than the grace.

    Args:
        store: the embedded store (not opened read-only).
        grace_seconds: keep unreferenced blocks written less than this long ago.
        dry_run: count only; delete nothing.
        wait: seconds to wait for running loads to end before giving up.  A process
            that has written to *store* itself holds the lock until ``store.close()``.

    Raises:
        ConflictError: a load kept writing for *wait* seconds.
        BackendError: the catalog or a block file could not be read or removed.
    """
    report = GcReport(dry_run=dry_run, grace_seconds=grace_seconds)
    keep = store.home / "keep"
    with _exclusive(store, wait):
        referenced = _referenced_md5s(store)
        now = time.time()
        for md5, path in _block_files(keep):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BackendError(f"reading {path}: {exc.strerror}") from None
            if md5 in referenced:
                report.referenced_blocks += 1
                report.referenced_bytes += info.st_size
            elif now - info.st_mtime < grace_seconds:
                report.recent_blocks += 1
                report.recent_bytes += info.st_size
            else:
                if not dry_run:
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise BackendError(f"deleting {path}: {exc.strerror}") from None
                report.deleted_blocks += 1
                report.deleted_bytes += info.st_size
                report.deleted.append(f"{md5}+{info.st_size}")
        report.stale_temporary_files = _stale_temporary_files(keep / "tmp", dry_run)
    return report


def _referenced_md5s(store: EmbeddedBackend) -> set[str]:
    referenced: set[str] = set()
    for record in store.list_collections([], select=["manifest_text"]):
        for item in parse_manifest(record["manifest_text"]):
            for segment in item.segments:
                referenced.add(Locator.parse(segment.locator).md5)
    return referenced


def _block_files(keep: Path) -> Iterator[tuple[str, Path]]:
    """``(md5, path)`` of every block file under *keep* (``keep/<md5[:3]>/<md5>``)."""
    try:
        folders = sorted(keep.iterdir())
    except FileNotFoundError:
        return
    for folder in folders:
        if len(folder.name) != 3 or not folder.is_dir():
            continue  # keep/tmp, and anything that is not ours
        for path in sorted(folder.iterdir()):
            if _MD5_NAME.fullmatch(path.name) and path.name.startswith(folder.name):
                yield path.name, path


def _stale_temporary_files(tmp: Path, dry_run: bool) -> int:
    """Remove (or count) half-written blocks whose process no longer runs."""
    count = 0
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return 0
    for name in names:
        pid = name.partition(".")[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            count += 1
            if not dry_run:
                with contextlib.suppress(OSError):
                    (tmp / name).unlink()
    return count
