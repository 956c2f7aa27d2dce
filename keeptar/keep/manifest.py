"""Keep manifests, locators and portable data hashes, byte-identical to Arvados.

A manifest line is ``stream locator+ pos:size:name+``; positions index the
concatenation of the line's blocks.  Names escape ``\\``, ``:``, and bytes up
to space as ``\\%03o``.  The portable data hash (PDH) is the md5 of the
manifest with locator hints removed, ``+`` its length.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from keeptar.errors import UsageError

__all__ = [
    "BLOCK_SIZE",
    "EMPTY_BLOCK",
    "FileSegment",
    "Locator",
    "ManifestFile",
    "check_owner_uuid",
    "escape_name",
    "is_collection_ref",
    "is_collection_uuid",
    "is_portable_data_hash",
    "manifest_from_segments",
    "parse_manifest",
    "portable_data_hash",
    "portable_manifest",
    "single_file_manifest",
    "unescape_name",
]

#: Largest Keep block (64 MiB).
BLOCK_SIZE = 1 << 26
EMPTY_BLOCK = "d41d8cd98f00b204e9800998ecf8427e+0"
_LOCATOR = re.compile(r"([0-9a-f]{32})\+([0-9]+)((?:\+[A-Z][A-Za-z0-9@_-]*)*)")
_PDH = re.compile(r"[0-9a-f]{32}\+[0-9]+")
_COLLECTION_UUID = re.compile(r"[a-z0-9]{5}-4zz18-[a-z0-9]{15}")
_OWNER_UUID = re.compile(r"[a-z0-9]{5}-(?:j7d0g|tpzed)-[a-z0-9]{15}")
_ESCAPE = re.compile(r"[\\:\000-\040]")
_UNESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Locator:
    """A parsed block locator: ``md5+size`` and any hints (``+A…``, ``+R…``)."""

    md5: str
    size: int
    hints: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Locator:
        """Parse *text*, raising :class:`UsageError` if it is not a locator."""
        match = _LOCATOR.fullmatch(text)
        if match is None:
            raise UsageError(f"not a Keep block locator: {text!r}")
        hints = tuple(h for h in match.group(3).split("+") if h)
        return cls(match.group(1), int(match.group(2)), hints)

    @property
    def stripped(self) -> str:
        """``md5+size`` without hints."""
        return f"{self.md5}+{self.size}"

    def __str__(self) -> str:
        return "+".join([self.stripped, *self.hints])


def escape_name(name: str) -> str:
    """Escape a stream or file name the way the Arvados SDK writes manifests."""
    return _ESCAPE.sub(lambda m: f"\\{ord(m.group(0)):03o}", name)


def unescape_name(text: str) -> str:
    """Undo :func:`escape_name` (and accept unescaped text)."""
    return _UNESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def is_collection_uuid(text: str) -> bool:
    """Whether *text* looks like a collection UUID (``xxxxx-4zz18-<15>``)."""
    return bool(_COLLECTION_UUID.fullmatch(text))


def check_owner_uuid(text: str) -> None:
    """Raise :class:`UsageError` unless *text* looks like a project or user UUID.

    (``xxxxx-j7d0g-<15>`` or ``xxxxx-tpzed-<15>``: what may own a collection.)
    """
    if not _OWNER_UUID.fullmatch(text):
        raise UsageError(f"{text!r} is not a project or user UUID (xxxxx-j7d0g-… or xxxxx-tpzed-…)")


def is_collection_ref(text: str) -> bool:
    """Whether *text* names a collection: a PDH or a collection UUID."""
    return is_portable_data_hash(text) or is_collection_uuid(text)


def is_portable_data_hash(text: str) -> bool:
    """Whether *text* looks like a PDH (``<md5>+<size>``)."""
    return bool(_PDH.fullmatch(text))


def single_file_manifest(file_name: str, locators: Sequence[str], size: int) -> str:
    """The manifest the SDK writes for one file of *size* bytes stored in *locators*."""
    if not locators:
        locators = [EMPTY_BLOCK]
    blocks = " ".join(locators)
    return f". {blocks} 0:{size}:{escape_name(file_name)}\n"


def manifest_from_segments(file_name: str, segments: Sequence[FileSegment]) -> str:
    """A one-file manifest naming *segments* (of blocks already in Keep) *file_name*.

    Each block is listed once, in order of first use; contiguous segments merge,
    so a file stored as whole blocks gives exactly :func:`single_file_manifest`.
    """
    blocks: list[str] = []
    starts: dict[str, int] = {}
    total = 0
    for segment in segments:
        if segment.locator not in starts:
            starts[segment.locator] = total
            blocks.append(segment.locator)
            total += Locator.parse(segment.locator).size
    tokens: list[list[int]] = []
    for segment in segments:
        position = starts[segment.locator] + segment.offset
        if tokens and tokens[-1][0] + tokens[-1][1] == position:
            tokens[-1][1] += segment.length
        else:
            tokens.append([position, segment.length])
    if not blocks:
        return single_file_manifest(file_name, [], 0)
    name = escape_name(file_name)
    words = [".", *blocks, *(f"{pos}:{size}:{name}" for pos, size in tokens)]
    return " ".join(words) + "\n"


def portable_manifest(manifest_text: str) -> str:
    """*manifest_text* with every locator hint removed, as the API server stores it."""
    lines = []
    for line in manifest_text.splitlines():
        words = line.rstrip().split(" ")
        if not words or not words[0]:
            continue
        out = [words[0]]
        for word in words[1:]:
            match = _LOCATOR.fullmatch(word)
            out.append(f"{match.group(1)}+{match.group(2)}" if match else word)
        lines.append(" ".join(out))
    return "".join(line + "\n" for line in lines)


def portable_data_hash(manifest_text: str) -> str:
    """The portable data hash Arvados computes for *manifest_text*."""
    portable = portable_manifest(manifest_text).encode()
    return f"{hashlib.md5(portable).hexdigest()}+{len(portable)}"


@dataclass(frozen=True, slots=True)
class FileSegment:
    """Part of a file: *length* bytes at *offset* within block *locator*."""

    locator: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One file of a manifest, its bytes as a list of block segments."""

    path: str
    size: int
    segments: tuple[FileSegment, ...]


def parse_manifest(manifest_text: str) -> list[ManifestFile]:
    """Return the files a manifest describes, in manifest order.

    Repeated tokens for one path concatenate, as the SDK reads them.

    Raises:
        UsageError: the text is not a well-formed manifest.
    """
    files: dict[str, list[FileSegment]] = {}
    for number, line in enumerate(manifest_text.splitlines(), 1):
        words = line.split(" ")
        if not words[0]:
            continue
        stream = unescape_name(words[0])
        if stream != "." and not stream.startswith("./"):
            raise UsageError(f"manifest line {number}: bad stream name {words[0]!r}")
        blocks: list[Locator] = []
        starts: list[int] = []
        total = 0
        index = 1
        while index < len(words) and _LOCATOR.fullmatch(words[index]):
            locator = Locator.parse(words[index])
            blocks.append(locator)
            starts.append(total)
            total += locator.size
            index += 1
        if not blocks:
            raise UsageError(f"manifest line {number}: no block locators")
        for token in words[index:]:
            pos_text, _, rest = token.partition(":")
            size_text, _, name = rest.partition(":")
            if not (pos_text.isdigit() and size_text.isdigit() and name):
                raise UsageError(f"manifest line {number}: bad file token {token!r}")
            pos, size = int(pos_text), int(size_text)
            if pos + size > total:
                raise UsageError(f"manifest line {number}: {token!r} runs past its blocks")
            path = (stream + "/" + unescape_name(name))[2:]
            files.setdefault(path, []).extend(_segments(blocks, starts, pos, size))
    return [
        ManifestFile(path, sum(s.length for s in segs), tuple(segs)) for path, segs in files.items()
    ]


def _segments(
    blocks: Sequence[Locator], starts: Sequence[int], pos: int, size: int
) -> Iterable[FileSegment]:
    end = pos + size
    for locator, start in zip(blocks, starts, strict=True):
        block_end = start + locator.size
        if block_end <= pos or start >= end:
            continue
        lo = max(pos, start)
        hi = min(end, block_end)
        yield FileSegment(str(locator), lo - start, hi - lo)
