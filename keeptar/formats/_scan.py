"""The event consumer shared by every layout: one pass, no assumptions about order.

:class:`ArchiveScanner` receives tar events and decides per member whether to
capture it (small JSON-like members only, under a per-member and a total cap),
digest it (sha256), or skip it.  At the end it leaves an :class:`ArchiveScan`
that layout modules interpret: they never see the stream.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from keeptar.errors import ArchiveError
from keeptar.formats._names import (
    INDEX_JSON,
    MANIFEST_JSON,
    OCI_LAYOUT,
    REPOSITORIES,
)
from keeptar.formats._unpack import UnpackCheck
from keeptar.streaming import (
    NEED_DATA,
    ArchiveEnd,
    Event,
    MemberData,
    MemberEnd,
    MemberHeader,
    MemberType,
    TarReader,
    normalize_member_path,
)
from keeptar.streaming.decompress import Compression, Decompressor, detect_compression

__all__ = ["DEFAULT_MEMBER_CAP", "DEFAULT_TOTAL_CAP", "ArchiveScan", "ArchiveScanner", "Member"]

#: Largest member captured into memory (configs with long histories stay well under).
DEFAULT_MEMBER_CAP = 8 << 20
#: Largest total of captured members.
DEFAULT_TOTAL_CAP = 64 << 20
_MAX_LINK_HOPS = 16
_JSON_NAMES = frozenset({MANIFEST_JSON, INDEX_JSON, OCI_LAYOUT, REPOSITORIES})
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(slots=True)
class Member:
    """What the scan recorded about one member."""

    header: MemberHeader
    sha256: str | None = None  #: hex digest of the member bytes, if computed
    uncompressed_sha256: str | None = None  #: for gzip/zstd members, of the decompressed bytes
    compression: Compression = Compression.NONE
    data: bytes | None = None  #: captured bytes
    oversize: bool = False  #: wanted in memory, but over the cap

    @property
    def path(self) -> str:
        return self.header.path

    @property
    def type(self) -> MemberType:
        return self.header.type

    @property
    def size(self) -> int:
        return self.header.size


def _wants_capture(path: str) -> str:
    """Return "must" for members a layout may need, "maybe" for blobs that might be JSON."""
    base = posixpath.basename(path)
    if path in _JSON_NAMES or base == "json" or base == "VERSION" or base.endswith(".json"):
        return "must"
    if path.startswith("blobs/") or base.startswith("sha256:"):
        return "maybe"
    return ""


class ArchiveScanner:
    """Tar event consumer that records an :class:`ArchiveScan`.

    Args:
        digest: compute the sha256 of every regular member (and of the
            decompressed bytes of gzip/zstd members); otherwise only captured
            members are hashed and the rest is skipped unread.
        member_cap: largest member captured into memory.
        total_cap: largest total captured.
    """

    def __init__(
        self,
        *,
        digest: bool = False,
        member_cap: int = DEFAULT_MEMBER_CAP,
        total_cap: int = DEFAULT_TOTAL_CAP,
    ) -> None:
        self.scan = ArchiveScan(member_cap=member_cap)
        self.scan.digested = digest
        self._digest = digest
        self._member_cap = member_cap
        self._total_cap = total_cap
        self._total = 0
        self._current: Member | None = None
        self._capture: bytearray | None = None
        self._maybe_json = False
        self._hash: Any = None
        self._inner: Decompressor | None = None
        self._inner_hash: Any = None
        self._first = True

    def __call__(self, event: Event, reader: TarReader) -> None:
        if isinstance(event, MemberData):
            self._on_data(event.data, reader)
        elif isinstance(event, MemberHeader):
            self._on_header(event, reader)
        elif isinstance(event, MemberEnd):
            self._on_end()
        elif isinstance(event, ArchiveEnd):
            self.scan.end = event

    def _on_header(self, header: MemberHeader, reader: TarReader) -> None:
        self.scan.unpack.add(header)
        member = Member(header)
        self._current = member
        self.scan.add(member)
        self._capture = None
        self._hash = None
        self._inner = None
        self._inner_hash = None
        self._first = True
        if header.type is not MemberType.FILE:
            return
        want = _wants_capture(header.path)
        if want:
            if header.size > self._member_cap:
                member.oversize = want == "must"
            else:
                self._total += header.size
                if self._total > self._total_cap:
                    raise ArchiveError(
                        f"the archive's metadata members exceed the {_size_text(self._total_cap)} "
                        f"cap at member {header.name!r}",
                        header.header_offset,
                    )
                self._capture = bytearray()
                self._maybe_json = want == "maybe"
        if self._digest or self._capture is not None:
            self._hash = hashlib.sha256()
        elif header.size:
            reader.skip_data()

    def _on_data(self, data: memoryview, reader: TarReader) -> None:
        if self._first:
            self._first = False
            if self._capture is not None and self._maybe_json and not _looks_like_json(data):
                self._capture = None
                assert self._current is not None
                self._total -= self._current.size
                if not self._digest:
                    self._hash = None
                    reader.skip_data()
                    return
            if self._digest:
                kind = detect_compression(bytes(data[:6]))
                if kind in (Compression.GZIP, Compression.ZSTD):
                    assert self._current is not None
                    self._current.compression = kind
                    self._inner = Decompressor(kind)
                    self._inner_hash = hashlib.sha256()
        if self._hash is not None:
            self._hash.update(data)
        if self._capture is not None:
            self._capture += data
        if self._inner is not None:
            self._feed_inner(bytes(data))

    def _feed_inner(self, data: bytes) -> None:
        assert self._inner is not None
        self._inner.feed(data)
        self._drain_inner()

    def _drain_inner(self) -> None:
        assert self._inner is not None
        while True:
            try:
                out = self._inner.next_chunk()
            except ArchiveError:
                # Not really compressed after all: leave it to the layout to judge.
                self._inner = None
                self._inner_hash = None
                assert self._current is not None
                self._current.compression = Compression.NONE
                return
            if out is NEED_DATA or not out:
                return
            self._inner_hash.update(out)

    def _on_end(self) -> None:
        member = self._current
        if member is None:
            return
        if self._hash is not None:
            member.sha256 = self._hash.hexdigest()
        if self._capture is not None:
            member.data = bytes(self._capture)
        if self._inner is not None:
            self._inner.feed_eof()
            self._drain_inner()
            if self._inner_hash is not None:
                member.uncompressed_sha256 = self._inner_hash.hexdigest()
        self._current = None
        self._capture = None
        self._inner = None


def _size_text(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 and not size % (1 << 20) else f"{size}-byte"


def _padded(size: int) -> int:
    """*size* rounded up to whole 512-byte tar blocks."""
    return -(-size // 512) * 512


def _looks_like_json(data: memoryview) -> bool:
    head = bytes(data[:64]).lstrip()
    return head[:1] in (b"{", b"[") or not head


class ArchiveScan:
    """Members of one archive, by normalised path, with captured data and digests."""

    def __init__(self, *, member_cap: int = DEFAULT_MEMBER_CAP) -> None:
        self.member_cap = member_cap
        self.members: dict[str, Member] = {}
        self.order: list[str] = []
        self.end: ArchiveEnd | None = None
        #: Whether every regular member was hashed (``ArchiveScanner(digest=True)``).
        self.digested = False
        #: stream offset just past the last member's padded data: where the end marker starts
        self.body_end = 0
        #: ``docker load``'s extraction, replayed on the member headers
        self.unpack = UnpackCheck()

    def docker_load_problems(self) -> tuple[str, ...]:
        """Why ``docker load`` would refuse this archive or read it differently, if it would."""
        problems = []
        if self.unpack.refusal is not None:
            problems.append(f"docker load would refuse this archive: {self.unpack.refusal}")
        for name, at in self.unpack.shadowed:
            problems.append(
                f"docker load would extract member {name!r} as {at!r}, "
                "over the member keeptar reads by that name"
            )
        return tuple(problems)

    def add(self, member: Member) -> None:
        """Record *member*; a later member of the same path replaces an earlier one."""
        if member.path not in self.members:
            self.order.append(member.path)
        self.members[member.path] = member
        self.body_end = max(self.body_end, member.header.data_offset + _padded(member.size))

    def has(self, path: str) -> bool:
        """Whether a member (of any type) has normalised path *path*."""
        return path in self.members

    def regular_paths(self) -> list[str]:
        """Paths of regular-file members, in archive order."""
        return [p for p in self.order if self.members[p].type is MemberType.FILE]

    def resolve(self, path: str, *, what: str) -> Member:
        """Return the regular member at *path*, following links inside the archive.

        Args:
            path: a normalised member path.
            what: how to describe the reference in errors (``"manifest.json"``,
                ``"layer 2 of image 1"``…).

        Raises:
            ArchiveError: the member is missing, not a regular file, or a link
                leads outside the archive or around in a loop.
        """
        current = path
        for _ in range(_MAX_LINK_HOPS):
            member = self.members.get(current)
            if member is None:
                if current == path:
                    raise ArchiveError(f"{what}: {path!r} is not in the archive")
                raise ArchiveError(
                    f"{what}: {path!r} links to {current!r}, which is not in the archive"
                )
            if member.type is MemberType.FILE:
                return member
            if member.type not in (MemberType.SYMLINK, MemberType.HARDLINK):
                raise ArchiveError(f"{what}: {current!r} is a {member.type.value}, not a file")
            target = member.header.linkname
            if member.type is MemberType.SYMLINK:
                if target.startswith("/"):
                    raise ArchiveError(
                        f"{what}: {current!r} is a symlink to {target!r}, outside the archive"
                    )
                joined = normalize_member_path(posixpath.join(posixpath.dirname(current), target))
            else:
                joined = normalize_member_path(target)
            if joined.startswith("..") or not joined:
                raise ArchiveError(
                    f"{what}: {current!r} is a {member.type.value} to {target!r}, "
                    "outside the archive"
                )
            current = joined
        raise ArchiveError(f"{what}: {path!r} is a symlink loop")

    def read_bytes(self, path: str, *, what: str) -> tuple[Member, bytes]:
        """Return the member at *path* (links followed) and its captured bytes.

        Raises:
            ArchiveError: missing, a bad link, or too large to have been captured.
        """
        member = self.resolve(path, what=what)
        if member.data is None:
            if member.oversize:
                raise ArchiveError(
                    f"{what}: {member.path!r} is {member.size} bytes, over the "
                    f"{_size_text(self.member_cap)} cap for metadata members"
                )
            raise ArchiveError(f"{what}: {member.path!r} is not a JSON metadata member")
        return member, member.data

    def read_json(self, path: str, *, what: str) -> Any:
        """Return the parsed JSON of the member at *path*.

        Raises:
            ArchiveError: as :meth:`read_bytes`, or the bytes are not valid JSON.
        """
        _, data = self.read_bytes(path, what=what)
        return parse_json(data, what=f"{what} ({path})")


def parse_json(data: bytes, *, what: str) -> Any:
    """Parse *data* as UTF-8 JSON, raising :class:`ArchiveError` naming *what*."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(f"decoding {what}: invalid JSON: {exc}") from None
    except RecursionError:  # hostile nesting: no image document is anywhere near this deep
        raise ArchiveError(f"decoding {what}: JSON nested too deeply") from None


def is_hex64(text: str) -> bool:
    """Whether *text* is exactly 64 lowercase hex digits."""
    return bool(_HEX64.fullmatch(text))
