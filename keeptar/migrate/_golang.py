"""Go's ``encoding/json`` and ``time`` behaviour, as Docker 20.10 (Go < 1.22) shows it.

Only what the v1 -> v2 conversion needs: string encoding with HTML escaping,
compaction of raw JSON (``json.RawMessage`` re-marshalled), splitting an
object into raw members, RFC 3339 parsing and ``RFC3339Nano`` formatting.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from keeptar.errors import ArchiveError

__all__ = [
    "ZERO_TIME",
    "JsonObject",
    "compact",
    "go_string",
    "go_time",
    "loads_pairs",
    "object_members",
    "split_object",
]

#: How Go writes the zero ``time.Time``.
ZERO_TIME = "0001-01-01T00:00:00Z"

_HEX = "0123456789abcdef"
_STRING_OR_SPACE = re.compile(rb'("(?:[^"\\]|\\.)*")|[ \t\n\r]+', re.S)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?"
    r"(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))"
)


def go_string(text: str) -> bytes:
    """*text* as Go's ``json.Marshal`` writes a string (HTML-safe, Go before 1.22)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if code < 0x80:
            if char == '"':
                out.append('\\"')
            elif char == "\\":
                out.append("\\\\")
            elif char == "\n":
                out.append("\\n")
            elif char == "\r":
                out.append("\\r")
            elif char == "\t":
                out.append("\\t")
            elif code < 0x20 or char in "<>&":
                out.append("\\u00" + _HEX[code >> 4] + _HEX[code & 0xF])
            else:
                out.append(char)
        elif 0xD800 <= code <= 0xDFFF:  # an undecodable byte or a lone surrogate escape
            out.append("\\ufffd")
        elif code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out).encode("utf-8")


def compact(raw: bytes) -> bytes:
    """Valid JSON *raw* as Go re-marshals a ``json.RawMessage``.

    Whitespace outside strings goes; ``<``, ``>``, ``&``, U+2028 and U+2029 are
    escaped; every other byte (escapes, number spellings, invalid UTF-8) stays.
    """
    out = _STRING_OR_SPACE.sub(lambda m: m.group(1) or b"", raw)
    return (
        out.replace(b"<", b"\\u003c")
        .replace(b">", b"\\u003e")
        .replace(b"&", b"\\u0026")
        .replace(b"\xe2\x80\xa8", b"\\u2028")
        .replace(b"\xe2\x80\xa9", b"\\u2029")
    )


class JsonObject(list):  # type: ignore[type-arg]
    """A decoded JSON object: its ``(key, value)`` pairs in order, duplicates kept."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_pairs(data: bytes, *, what: str) -> Any:
    """Parse JSON as Go accepts it; objects become :class:`JsonObject` pair lists.

    Invalid UTF-8 is tolerated (Go replaces it when decoding strings); NaN and
    Infinity are refused.

    Raises:
        ArchiveError: the bytes are not valid JSON.
    """
    try:
        return json.loads(
            data.decode("utf-8", "surrogateescape"),
            object_pairs_hook=JsonObject,
            parse_constant=_reject_constant,
        )
    except ValueError as exc:
        raise ArchiveError(f"decoding {what}: invalid JSON: {exc}") from None
    except RecursionError:
        raise ArchiveError(f"decoding {what}: JSON nested too deeply") from None


def go_text(text: str) -> str:
    """*text* with the characters Go's decoder turns into U+FFFD replaced."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def _value_end(buf: bytes, pos: int) -> int:
    """End offset of the compact JSON value starting at *pos*."""
    first = buf[pos : pos + 1]
    if first == b'"':
        match = _STRING.match(buf, pos)
        assert match is not None
        return match.end()
    if first in (b"{", b"["):
        depth = 0
        while True:
            char = buf[pos : pos + 1]
            if char == b'"':
                match = _STRING.match(buf, pos)
                assert match is not None
                pos = match.end()
                continue
            if char in (b"{", b"["):
                depth += 1
            elif char in (b"}", b"]"):
                depth -= 1
                if not depth:
                    return pos + 1
            pos += 1
    while pos < len(buf) and buf[pos : pos + 1] not in (b",", b"}", b"]"):
        pos += 1
    return pos


def object_members(data: bytes, *, what: str) -> list[tuple[str, bytes]]:
    """The members of a JSON object as ``(decoded key, compacted raw value)``, in order,
    duplicates kept.

    Raises:
        ArchiveError: not valid JSON, or not an object.
    """
    doc = loads_pairs(data, what=what)
    if not isinstance(doc, JsonObject):
        raise ArchiveError(f"decoding {what}: expected a JSON object")
    buf = compact(data.strip(b" \t\r\n"))
    out: list[tuple[str, bytes]] = []
    pos = 1
    while buf[pos : pos + 1] != b"}":
        match = _STRING.match(buf, pos)
        assert match is not None
        key = go_text(json.loads(match.group().decode("utf-8", "surrogateescape")))
        pos = match.end() + 1  # the colon
        end = _value_end(buf, pos)
        out.append((key, buf[pos:end]))
        pos = end
        if buf[pos : pos + 1] == b",":
            pos += 1
    return out


def split_object(data: bytes, *, what: str) -> dict[str, bytes]:
    """Decode a JSON object to ``{key: compacted raw value}`` as Go's
    ``json.Unmarshal`` into ``map[string]*json.RawMessage`` then ``Marshal`` does
    (last duplicate wins).

    Raises:
        ArchiveError: not valid JSON, or not an object.
    """
    return dict(object_members(data, what=what))


def go_time(value: str, *, what: str) -> str:
    """Parse RFC 3339 *value* as Go's ``time.Time.UnmarshalJSON`` does and return
    what ``MarshalJSON`` writes back (no quotes): fraction trimmed, ``Z`` for UTC.

    Raises:
        ArchiveError: Go would refuse the value (and so would ``docker load``).
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ArchiveError(f"{what}: created {value!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime.datetime(year or 2000, month, day, hour, minute, second)  # year 0 is leap
    except ValueError as exc:
        raise ArchiveError(f"{what}: created {value!r}: {exc}") from None
    fraction = (match.group(7) or "")[:9].rstrip("0")
    if match.group(8):
        zone = "Z"
    else:
        offset = int(match.group(10)) * 60 + int(match.group(11))
        sign = match.group(9)
        zone = "Z" if offset == 0 else f"{sign}{offset // 60:02d}:{offset % 60:02d}"
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return text + (f".{fraction}" if fraction else "") + zone
