"""Files made of parts of blocks already in Keep: slicing a stored stream by byte ranges."""

from __future__ import annotations

from collections.abc import Sequence

from keeptar.keep.manifest import FileSegment, Locator

__all__ = ["slice_segments", "stream_segments"]


def stream_segments(locators: Sequence[str]) -> list[FileSegment]:
    """The segments of a stream stored as whole blocks *locators*, in order."""
    return [FileSegment(loc, 0, Locator.parse(loc).size) for loc in locators]


def slice_segments(
    segments: Sequence[FileSegment], ranges: Sequence[tuple[int, int]]
) -> list[FileSegment]:
    """The segments holding the bytes ``[offset, offset + length)`` of each range, in order.

    *segments* describe a file (as a manifest does); the ranges are offsets in
    that file.

    Raises:
        ValueError: a range runs past the end of the file.
    """
    starts: list[int] = []
    total = 0
    for segment in segments:
        starts.append(total)
        total += segment.length
    out: list[FileSegment] = []
    for offset, length in ranges:
        if offset < 0 or length < 0 or offset + length > total:
            raise ValueError(f"range {offset}+{length} is outside the {total}-byte file")
        end = offset + length
        for segment, start in zip(segments, starts, strict=True):
            seg_end = start + segment.length
            if seg_end <= offset or start >= end or not segment.length:
                continue
            lo = max(offset, start)
            hi = min(end, seg_end)
            out.append(FileSegment(segment.locator, segment.offset + lo - start, hi - lo))
    return out
