"""The native v1 -> v2 engine: Docker's own legacy-load conversion, without a daemon.

Docker <= 1.9 saved images as ``<id>/json`` + ``<id>/layer.tar`` directories
(v1); Docker 29 no longer loads them.  Docker 1.10-24 converted them on
``docker load`` (moby ``image/tarexport/load.go`` ``legacyLoad``,
``image/v1/imagev1.go``).  This module repeats that conversion byte for byte,
so the image ID is the one Docker 20.10 gives:

* each layer's diff ID is the sha256 of its ``layer.tar`` after gzip, bzip2
  or xz decompression (hashed as it streams);
* each layer's config is its v1 JSON as raw members (re-marshalled through
  Docker's structs first if written by Docker before 1.8.3), less ``id``,
  ``parent``, ``Size``, ``parent_id``, ``layer_id`` and ``throwaway``, plus
  ``rootfs`` and ``history`` (one entry per layer), written as Go writes a
  ``map[string]*json.RawMessage``;
* the image ID is the sha256 of the top layer's config.

The v2 archive is zero-copy: the v1 archive's members as they are (up to its
end-of-archive marker), then ``<hex>.json`` configs, ``manifest.json`` (and
``repositories`` only if the v1 archive had none and there are tags), then
a new end marker.  No member name appears twice: loaders disagree on which copy
counts (checked here: ``docker load`` takes the last ``manifest.json``,
containers/image, which singularity and podman use, the first).
:func:`plan_conversion` gives the cut point and the tail
so a stored v1 archive can become a v2 one as segments of its own Keep blocks
plus one small new block; :func:`convert_stream` writes the result as a stream.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from keeptar.errors import ArchiveError, UsageError
from keeptar.formats import ArchiveFormat, ArchiveScan, ArchiveScanner, detect_layout
from keeptar.formats._names import MANIFEST_JSON, REPOSITORIES, V1_JSON, V1_LAYER
from keeptar.formats._scan import Member
from keeptar.formats.docker_v1 import layer_chain, read_tags
from keeptar.formats.loadable import Rewrite
from keeptar.migrate._golang import (
    compact,
    go_string,
    loads_pairs,
    object_members,
    split_object,
)
from keeptar.migrate._v1image import decode_v1image, marshal_v1image
from keeptar.streaming import Event, MemberData, MemberEnd, MemberHeader, MemberType, TarReader
from keeptar.streaming.decompress import Compression, Decompressor
from keeptar.streaming.sources import ByteSource, run_tar_stream

__all__ = [
    "Conversion",
    "ConvertedImage",
    "StreamResult",
    "convert_stream",
    "history_entry",
    "make_config",
    "plan_conversion",
]

_BLOCK = 512
_END_MARKER = bytes(2 * _BLOCK)
#: Docker's ``noFallbackMinVersion``: JSON from older Dockers is re-marshalled first.
_NO_FALLBACK_MIN_VERSION = "1.8.3"
_DROPPED = ("id", "parent", "Size", "parent_id", "layer_id", "throwaway")
# pkg/archive DetectCompression in moby v20.10 (zstd came later: Docker 20.10 hashes it raw)
_LAYER_MAGIC = (
    (b"BZh", Compression.BZIP2),
    (b"\x1f\x8b\x08", Compression.GZIP),
    (b"\xfd7zXZ\x00", Compression.XZ),
)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _version_less(version: str, other: str) -> bool:
    """moby ``api/types/versions.LessThan``: dotted parts compared as Atoi (bad part = 0)."""

    def number(part: str) -> int:
        # strconv.Atoi: optional sign, ASCII digits; out of range clamps; errors give 0
        if not re.fullmatch(r"[+-]?[0-9]+", part):
            return 0
        return max(-(1 << 63), min(int(part), (1 << 63) - 1))

    mine, theirs = version.split("."), other.split(".")
    for index in range(max(len(mine), len(theirs))):
        a = number(mine[index]) if index < len(mine) else 0
        b = number(theirs[index]) if index < len(theirs) else 0
        if a != b:
            return a < b
    return False


def _decode(v1_json: bytes, *, what: str) -> dict[str, Any]:
    """Decode a v1 JSON into V1Image values, refusing what Go's decoder refuses."""
    image = decode_v1image(loads_pairs(v1_json, what=what), what=what)
    for key, raw in object_members(v1_json, what=what):
        # time.Time.UnmarshalJSON parses the raw token: an escape in it never parses
        if key.lower() == "created" and raw.startswith(b'"') and b"\\" in raw:
            raise ArchiveError(f"{what}: created {raw.decode(errors='replace')} is not RFC 3339")
    return image


def history_entry(v1_json: bytes, *, what: str = "v1 json") -> bytes:
    """The history item Docker makes from one layer's v1 JSON (``HistoryFromConfig``).

    Keys ``created`` (always), ``author``, ``created_by`` (the container
    config's ``Cmd`` joined by spaces), ``comment``; empty ones omitted.
    """
    image = _decode(v1_json, what=what)
    parts = [b'"created":' + go_string(image["created"])]
    cmd = image["container_config"]["Cmd"] or []
    for key, value in (
        ("author", image["author"]),
        ("created_by", " ".join(cmd)),
        ("comment", image["comment"]),
    ):
        if value:
            parts.append(go_string(key) + b":" + go_string(value))
    return b"{" + b",".join(parts) + b"}"


def make_config(
    v1_json: bytes, diff_ids: Sequence[str], history: Sequence[bytes], *, what: str = "v1 json"
) -> bytes:
    """The v2 config Docker makes from a layer's v1 JSON (``MakeConfigFromV1Config``).

    Args:
        v1_json: the layer's ``json`` bytes exactly as in the archive.
        diff_ids: ``sha256:`` diff IDs of the layers from the base to this one.
        history: :func:`history_entry` of each of those layers.

    Raises:
        ArchiveError: Docker would refuse the JSON.
    """
    image = _decode(v1_json, what=what)
    version = image["docker_version"]
    if _version_less(version, _NO_FALLBACK_MIN_VERSION):
        v1_json = marshal_v1image(image)
    members = split_object(v1_json, what=what)
    for key in _DROPPED:
        members.pop(key, None)
    members["rootfs"] = (
        b'{"type":"layers","diff_ids":[' + b",".join(go_string(d) for d in diff_ids) + b"]}"
    )
    members["history"] = compact(b"[" + b",".join(history) + b"]")
    keys = sorted(members, key=lambda k: k.encode("utf-8", "surrogatepass"))
    return b"{" + b",".join(go_string(k) + b":" + members[k] for k in keys) + b"}"


# ---- reading the archive ---------------------------------------------------------------


class _GoMultiStream:
    """gzip or bzip2 as Go's ``compress/gzip`` and ``compress/bzip2`` read them:
    concatenated streams and nothing after them (NUL padding is an error there too,
    so Docker's load fails with ``invalid header`` / ``bad magic value``)."""

    def __init__(self, kind: Compression) -> None:
        self._kind = kind
        self._magic = b"\x1f\x8b\x08" if kind is Compression.GZIP else b"BZh"
        self._member = self._new()
        self._rest = b""
        self._eof = False

    def _new(self) -> Any:
        return zlib.decompressobj(31) if self._kind is Compression.GZIP else bz2.BZ2Decompressor()

    def feed(self, data: bytes) -> None:
        self._rest += data

    def feed_eof(self) -> None:
        self._eof = True

    def next_chunk(self) -> bytes | None:
        """The next decompressed bytes, None when more input is needed; b"" at the end."""
        name = self._kind.value
        while True:
            member = self._member
            if member.eof:
                rest = member.unused_data + self._rest
                self._rest = b""
                if not rest and self._eof:
                    return b""
                if len(rest) < 3 and not self._eof:
                    self._rest = rest
                    return None
                if rest[:3] != self._magic:
                    raise ArchiveError(f"{name}: data after the last {name} stream")
                self._member = member = self._new()
                self._rest = rest
            pending = self._has_pending(member)
            if not self._rest and not pending:
                if self._eof:
                    raise ArchiveError(f"{name}: unexpected end of data")
                return None
            if pending:  # zlib wants its unconsumed tail back; bz2 keeps its own
                data = member.unconsumed_tail if self._kind is Compression.GZIP else b""
            else:
                data, self._rest = self._rest, b""
            try:
                out = member.decompress(data, 1 << 20)
            except (zlib.error, OSError, EOFError) as exc:
                raise ArchiveError(f"{name}: {exc}") from None
            if out:
                return bytes(out)

    def _has_pending(self, member: Any) -> bool:
        """Whether the decompressor still holds input it has not turned into output."""
        if self._kind is Compression.GZIP:
            return bool(member.unconsumed_tail)
        return not member.needs_input and not member.eof


class _LayerHash:
    """sha256 of a ``layer.tar`` as Docker's ``DecompressStream`` hands it over."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._head = b""
        self._decided = False
        self._inner: Decompressor | _GoMultiStream | None = None
        self._hash = hashlib.sha256()
        self.compression = Compression.NONE

    def update(self, data: bytes | memoryview) -> None:
        if not self._decided:
            self._head += data
            if len(self._head) < 10:
                return
            self._decide()
            data, self._head = self._head, b""
        self._feed(data)

    def _decide(self) -> None:
        self._decided = True
        head = self._head
        if head.startswith(_ZSTD_MAGIC):
            raise ArchiveError(
                f"{self.path}: the layer is zstd-compressed, which Docker's legacy load "
                "does not decompress"
            )
        for magic, kind in _LAYER_MAGIC:
            if head.startswith(magic):
                self.compression = kind
                self._inner = Decompressor(kind) if kind is Compression.XZ else _GoMultiStream(kind)

    def _feed(self, data: bytes | memoryview) -> None:
        if self._inner is None:
            self._hash.update(data)  # hashed where it lies: most layers are plain tars
            return
        self._inner.feed(bytes(data))
        self._drain()

    def _drain(self) -> None:
        assert self._inner is not None
        while True:
            try:
                out = self._inner.next_chunk()
            except ArchiveError as exc:
                raise ArchiveError(f"{self.path}: {exc}") from None
            if not isinstance(out, bytes) or not out:  # NEED_DATA, None, or the end
                return
            self._hash.update(out)

    def finish(self) -> str:
        if not self._decided:
            self._decide()
            data, self._head = self._head, b""
            self._feed(data)
        if self._inner is not None:
            self._inner.feed_eof()
            self._drain()
        return "sha256:" + self._hash.hexdigest()


class _Reader:
    """Tar event consumer: an :class:`ArchiveScanner` for metadata, plus diff IDs of
    every ``layer.tar`` member, hashed as Docker's legacy load does."""

    def __init__(self, on_event: Callable[[], None] | None = None) -> None:
        self.scanner = ArchiveScanner()
        self.diff_ids: dict[str, str] = {}
        self.compressed: dict[str, Compression] = {}
        self._layer: _LayerHash | None = None
        self._on_event = on_event

    def __call__(self, event: Event, reader: TarReader) -> None:
        if isinstance(event, MemberHeader):
            if event.type is MemberType.FILE and posixpath.basename(event.path) == V1_LAYER:
                self.scanner.scan.add(Member(event))
                self._layer = _LayerHash(event.path)
            else:
                self._layer = None
                self.scanner(event, reader)
        elif self._layer is not None and isinstance(event, MemberData):
            self._layer.update(event.data)
        elif self._layer is not None and isinstance(event, MemberEnd):
            self.diff_ids[self._layer.path] = self._layer.finish()
            self.compressed[self._layer.path] = self._layer.compression
            self._layer = None
        else:
            self.scanner(event, reader)
        if self._on_event is not None:
            self._on_event()

    @property
    def scan(self) -> ArchiveScan:
        return self.scanner.scan


# ---- the conversion --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConvertedImage:
    """One image of a converted v1 archive.

    Attributes:
        id: ``sha256:<hex>`` image ID, as Docker 20.10's legacy load gives it.
        v1_id: the top v1 layer directory (the old image ID).
        repo_tags: names written to manifest.json.
        config: the config bytes (``id`` is their sha256).
        layers: ``<id>/layer.tar`` member paths, base first.
        diff_ids: the layers' diff IDs.
        compressions: each layer member's own compression (``none``, ``gzip``,
            ``bzip2``, ``xz``).  containerd's importer (Docker 29's default image
            store) decompresses only gzip and zstd layers, so it cannot load a
            bzip2 or xz one kept as it is.
    """

    id: str
    v1_id: str
    repo_tags: tuple[str, ...]
    config: bytes = field(repr=False)
    layers: tuple[str, ...]
    diff_ids: tuple[str, ...]
    compressions: tuple[str, ...] = ()

    @property
    def containerd_unreadable(self) -> tuple[str, ...]:
        """Layers kept bzip2- or xz-compressed, which containerd's importer cannot read."""
        return tuple(
            path
            for path, kind in zip(self.layers, self.compressions, strict=False)
            if kind in (Compression.BZIP2.value, Compression.XZ.value)
        )

    @property
    def config_name(self) -> str:
        """The member name of the config: ``<hex>.json``."""
        return self.id.removeprefix("sha256:") + ".json"

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``keeptar convert --json`` prints."""
        return {
            "id": self.id,
            "v1_id": self.v1_id,
            "repo_tags": list(self.repo_tags),
            "layers": len(self.layers),
            "diff_ids": list(self.diff_ids),
            "layer_compression": list(self.compressions),
        }


@dataclass(frozen=True, slots=True)
class Conversion:
    """How a v1 archive becomes a v2 archive without copying it.

    Attributes:
        images: the images, in manifest.json order.
        cut: offset in the (decompressed) v1 tar stream where its members end
            and its end-of-archive marker starts: keep bytes ``[0, cut)``.
        tail: bytes to append: the new members and the end marker.
        compression: the v1 archive's whole-stream compression; offsets are in
            the decompressed stream, so only an uncompressed archive can be
            referenced in place.
    """

    images: tuple[ConvertedImage, ...]
    cut: int
    tail: bytes = field(repr=False)
    compression: Compression = Compression.NONE

    @property
    def size(self) -> int:
        """Size of the v2 archive."""
        return self.cut + len(self.tail)

    @property
    def rewrite(self) -> Rewrite:
        """The same plan as a :class:`~keeptar.formats.loadable.Rewrite` (for
        :func:`keeptar.catalog.loadable.rewrite_manifest`)."""
        return Rewrite(keep=((0, self.cut),), tail=self.tail, reason="v1-converted")


def _tar_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    pad = -len(data) % _BLOCK
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + data + bytes(pad)


@dataclass(frozen=True, slots=True)
class _V1Layer:
    json: bytes
    parent: str | None


def _read_layers(scan: ArchiveScan) -> dict[str, _V1Layer]:
    """Every ``<dir>/json`` layer, decoded as Docker's legacy load decodes it."""
    layers: dict[str, _V1Layer] = {}
    for path in scan.order:
        head, _, tail = path.partition("/")
        if tail != V1_JSON or head in ("", "..") or scan.members[path].type is not MemberType.FILE:
            continue
        what = f"v1 image {head}"
        _, data = scan.read_bytes(path, what=what)
        image = _decode(data, what=what)
        system = image["os"]
        if system and system.lower() != "linux":
            raise ArchiveError(f"{what}: cannot load a {system} image (os {system!r}) on linux")
        parent = image["parent"] or None
        if parent is not None and ("/" in parent or parent in (".", "..")):
            raise ArchiveError(f"{what}: bad parent {parent!r}")
        layers[head] = _V1Layer(data, parent)
    return layers


def _convert_image(
    scan: ArchiveScan,
    diff_ids: dict[str, str],
    compressed: dict[str, Compression],
    layers: dict[str, _V1Layer],
    top: str,
    repo_tags: Sequence[str],
) -> ConvertedImage:
    layer_paths: list[str] = []
    kinds: list[str] = []
    chain: list[str] = []
    history: list[bytes] = []
    parents = {layer_id: layer.parent for layer_id, layer in layers.items()}
    for layer_id in layer_chain(top, parents):
        what = f"v1 image {layer_id}"
        path = f"{layer_id}/{V1_LAYER}"
        member = scan.resolve(path, what=f"{what} layer")
        digest = diff_ids.get(member.path)
        if digest is None:
            raise ArchiveError(f"{what}: {path!r} leads to {member.path!r}, not a layer.tar")
        v1_json = layers[layer_id].json
        chain.append(digest)
        history.append(history_entry(v1_json, what=what))
        layer_paths.append(path)
        kinds.append(compressed.get(member.path, Compression.NONE).value)
    # Docker makes every layer's config; only the top one is the image (the others
    # decode the same JSON the same way, so they fail exactly when this loop does).
    config = make_config(layers[top].json, chain, history, what=f"v1 image {top}")
    return ConvertedImage(
        id="sha256:" + hashlib.sha256(config).hexdigest(),
        v1_id=top,
        repo_tags=tuple(repo_tags),
        config=config,
        layers=tuple(layer_paths),
        diff_ids=tuple(chain),
        compressions=tuple(kinds),
    )


def _plan(reader: _Reader, repo_tags: Sequence[str] | None, compression: Compression) -> Conversion:
    scan = reader.scan
    layout = detect_layout(scan)
    if layout.FORMAT is not ArchiveFormat.DOCKER_V1:
        raise ArchiveError(f"not a Docker v1 archive: this is a {layout.FORMAT.value} archive")
    layers = _read_layers(scan)
    tags = read_tags(scan, layers)
    parents = {layer.parent for layer in layers.values()}
    # What Docker's legacy load leaves visible: tagged images and untagged leaves.
    tops = list(tags) + [i for i in layers if i not in parents and i not in tags]
    if repo_tags and len(tops) != 1:
        raise UsageError(
            f"the archive holds {len(tops)} images: names can be given for one image only"
        )
    converted = [
        _convert_image(
            scan,
            reader.diff_ids,
            reader.compressed,
            layers,
            top,
            list(repo_tags) if repo_tags else tags.get(top, []),
        )
        for top in tops
    ]
    tail = io.BytesIO()
    written: set[str] = set()
    for image in converted:
        name = image.config_name
        if name in written:
            continue
        existing = scan.members.get(name)
        if existing is not None:
            raise ArchiveError(f"the v1 archive already has a member named {name!r}")
        tail.write(_tar_member(name, image.config))
        written.add(name)
    manifest = [
        {
            "Config": image.config_name,
            "RepoTags": list(image.repo_tags) or None,
            "Layers": list(image.layers),
        }
        for image in converted
    ]
    tail.write(
        _tar_member(MANIFEST_JSON, json.dumps(manifest, separators=(",", ":")).encode() + b"\n")
    )
    if not scan.has(REPOSITORIES):
        repositories = _repositories(converted)
        if repositories:
            tail.write(_tar_member(REPOSITORIES, repositories))
    tail.write(_END_MARKER)
    return Conversion(
        images=tuple(converted), cut=scan.body_end, tail=tail.getvalue(), compression=compression
    )


def _repositories(images: Sequence[ConvertedImage]) -> bytes:
    """A ``repositories`` document naming each image's top v1 directory, if any is tagged."""
    out: dict[str, dict[str, str]] = {}
    for image in images:
        top = image.layers[-1].split("/", 1)[0]
        for name in image.repo_tags:
            repo, _, tag = name.rpartition(":")
            if repo and "/" not in tag and "@" not in name:
                out.setdefault(repo, {})[tag] = top
    return json.dumps(out, separators=(",", ":")).encode() + b"\n" if out else b""


def plan_conversion(
    source: ByteSource,
    *,
    repo_tags: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Conversion:
    """Read the v1 archive *source* once (hashing every layer) and plan its v2 form.

    Args:
        source: the v1 archive.
        repo_tags: names for manifest.json (default: the v1 ``repositories`` tags);
            only for an archive holding one image.
        progress: called with bytes consumed so far.

    Raises:
        ArchiveError: not a readable Docker v1 archive, or Docker would refuse it.
        UsageError: *repo_tags* given for a multi-image archive.
    """
    reader = _Reader()
    result = run_tar_stream(source, reader, progress=progress)
    return _plan(reader, repo_tags, result.compression)


@dataclass(frozen=True, slots=True)
class StreamResult:
    """What :func:`convert_stream` did.

    Attributes:
        conversion: the plan, or None if the input was not a v1 archive.
        format: the input's layout.
        bytes_written: size of the output.
    """

    conversion: Conversion | None
    format: ArchiveFormat
    bytes_written: int


def convert_stream(
    source: ByteSource,
    out: BinaryIO,
    *,
    repo_tags: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Convert the archive *source* to a v2 archive written to *out*, in one pass.

    The input's members are copied to *out* as they are read; once the whole
    archive has been read and hashed, the new members and the end marker follow.
    An input that is not a v1 archive is copied unchanged (as a decompressed tar
    if it was compressed).

    Raises:
        ArchiveError: not a readable image archive, or Docker would refuse it.
    """
    pending = bytearray()
    state = {"written": 0}
    reader: _Reader

    def flush() -> None:
        count = min(len(pending), reader.scan.body_end - state["written"])
        if count > 0:
            out.write(pending[:count])
            del pending[:count]
            state["written"] += count

    def tap(data: bytes) -> None:
        pending.extend(data)
        flush()

    reader = _Reader(flush)
    result = run_tar_stream(source, reader, tap=tap, progress=progress)
    flush()
    layout = detect_layout(reader.scan).FORMAT
    if layout is not ArchiveFormat.DOCKER_V1:
        out.write(pending)
        return StreamResult(None, layout, state["written"] + len(pending))
    conversion = _plan(reader, repo_tags, result.compression)
    if conversion.cut != state["written"]:  # pragma: no cover - flush keeps them equal
        raise ArchiveError("internal: copied bytes do not end at the members' end")
    out.write(conversion.tail)
    return StreamResult(conversion, layout, conversion.size)
