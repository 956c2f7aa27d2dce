"""The sans-IO tar reader against Python's tarfile and GNU tar, on real and edge-case archives."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, SHARED
from keeptar.errors import ArchiveError, UsageError
from keeptar.streaming import (
    NEED_DATA,
    ArchiveEnd,
    MemberData,
    MemberEnd,
    MemberHeader,
    MemberType,
    TarReader,
    normalize_member_path,
)

PLAIN_FIXTURES = sorted(
    p for p in [*FIXTURES.glob("*.tar"), *SHARED.glob("*.tar"), *(SHARED / "public").glob("*.tar")]
)


def read_all(data: bytes, chunks: list[int] | None = None, skip: bool = False) -> list[object]:
    """Feed *data* in pieces of the given sizes (cycled); return the events, data joined."""
    reader = TarReader()
    events: list[object] = []
    pending = bytearray()

    def pump() -> None:
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, MemberData):
                pending.extend(event.data)
                continue
            if isinstance(event, MemberEnd):
                events.append(("data", bytes(pending)))
                pending.clear()
            events.append(event)
            if isinstance(event, MemberHeader) and skip:
                reader.skip_data()

    sizes = chunks or [len(data) or 1]
    pos = 0
    index = 0
    while pos < len(data):
        size = max(1, sizes[index % len(sizes)])
        reader.feed(data[pos : pos + size])
        pos += size
        index += 1
        pump()
    reader.feed_eof()
    pump()
    return events


def listing(events: list[object]) -> list[tuple[str, str, int, str]]:
    return [
        (e.name, e.type.value, e.size, e.linkname) for e in events if isinstance(e, MemberHeader)
    ]


def tarfile_listing(data: bytes) -> list[tuple[str, str, int, str]]:
    kinds = {
        tarfile.REGTYPE: "file",
        tarfile.AREGTYPE: "file",
        tarfile.DIRTYPE: "directory",
        tarfile.SYMTYPE: "symlink",
        tarfile.LNKTYPE: "hardlink",
    }
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            kind = kinds.get(m.type, "other")
            name = m.name + "/" if kind == "directory" and not m.name.endswith("/") else m.name
            out.append((name, kind, m.size if kind == "file" else 0, m.linkname))
    return out


def normalise_dirs(items: list[tuple[str, str, int, str]]) -> list[tuple[str, str, int, str]]:
    # tarfile strips trailing "/" from directory names and may drop leading "./"
    return [(n.rstrip("/") if k == "directory" else n, k, s, ln) for n, k, s, ln in items]


@pytest.mark.parametrize("path", PLAIN_FIXTURES, ids=lambda p: p.name)
def test_agrees_with_tarfile_on_real_archives(path: Path) -> None:
    data = path.read_bytes()
    ours = listing(read_all(data))
    assert normalise_dirs(ours) == normalise_dirs(tarfile_listing(data))


@pytest.mark.parametrize("path", PLAIN_FIXTURES, ids=lambda p: p.name)
def test_agrees_with_gnu_tar_list(path: Path) -> None:
    names = subprocess.run(
        ["tar", "--list", "--quoting-style=literal", "-f", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.splitlines()
    ours = [e.name for e in read_all(path.read_bytes()) if isinstance(e, MemberHeader)]
    assert ours == names


@pytest.mark.parametrize("path", PLAIN_FIXTURES[:6], ids=lambda p: p.name)
def test_byte_at_a_time_gives_the_same_events(path: Path) -> None:
    data = path.read_bytes()
    assert read_all(data, [1]) == read_all(data)


def test_member_data_matches_tarfile() -> None:
    data = (FIXTURES / "docker-v2-app.tar").read_bytes()
    events = read_all(data, [777])
    contents = {}
    last = None
    for event in events:
        if isinstance(event, MemberHeader):
            last = event.name
        elif isinstance(event, tuple) and last is not None:
            contents[last] = event[1]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            if m.isfile():
                assert contents[m.name] == tar.extractfile(m).read()  # type: ignore[union-attr]


def build(
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    fmt: int,
    pax_headers: dict[str, str] | None = None,
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, pax_headers=pax_headers) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def entry(
    name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, data


LONG = "d" * 120 + "/" + "n" * 130 + ".json"
EDGE_SETS = {
    "long-names": [entry(LONG, b"{}"), entry("s", None, tarfile.SYMTYPE, "l" * 150 + "/target")],
    "ustar-prefix": [entry("p" * 90 + "/" + "q" * 90 + "/file.json", b"{}")],
    "leading-dot-and-slash": [entry("./manifest.json", b"[]"), entry("/abs/file", b"1")],
    "links-forward": [
        entry("a/layer.tar", None, tarfile.SYMTYPE, "../b/layer.tar"),
        entry("h", None, tarfile.LNKTYPE, "b/layer.tar"),
        entry("b/layer.tar", b"L" * 1000),
    ],
    "dirs": [entry("dir/", None, tarfile.DIRTYPE), entry("dir/f", b"abc")],
    "non-ascii": [entry("caf\u00e9/\u2603.json", b"{}")],
    "empty-file": [entry("empty", b"")],
}


FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}


@pytest.mark.parametrize(
    ("case", "fmt_name"),
    [
        (case, fmt)
        for case in sorted(EDGE_SETS)
        for fmt in FORMATS
        if not (fmt == "ustar" and case == "long-names")  # ustar cannot store names that long
    ],
)
def test_edge_cases_agree_with_tarfile(case: str, fmt_name: str) -> None:
    data = build(EDGE_SETS[case], FORMATS[fmt_name])
    ours = listing(read_all(data, [100]))
    assert normalise_dirs(ours) == normalise_dirs(tarfile_listing(data))


def test_pax_global_header_and_size_override() -> None:
    data = build([entry("g.json", b"{}")], tarfile.PAX_FORMAT, pax_headers={"comment": "hi"})
    assert listing(read_all(data)) == [("g.json", "file", 2, "")]
    # A PAX record that overrides the ustar size field, as Go writers do for big members.
    body = b"0123456789" * 100
    info = tarfile.TarInfo("big.bin")
    info.size = len(body)
    pax = tarfile.TarInfo("PaxHeaders/big.bin")
    record = b" size=%d\n" % len(body)
    record = b"%d%s" % (len(record) + len(str(len(record) + 3)), record)
    pax.type, pax.size = tarfile.XHDTYPE, len(record)
    raw = pax.tobuf(tarfile.USTAR_FORMAT) + record + bytes(-len(record) % 512)
    info.size = 0  # the header says 0; the PAX record says 1000
    raw += info.tobuf(tarfile.USTAR_FORMAT) + body + bytes(-len(body) % 512) + bytes(1024)
    events = read_all(raw, [33])
    assert listing(events) == [("big.bin", "file", 1000, "")]
    assert ("data", body) in events
    assert tarfile_listing(raw) == [("big.bin", "file", 1000, "")]


def base256_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    block[124:136] = b"\x80" + size.to_bytes(11, "big")
    block[148:156] = b"        "
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def test_base256_size() -> None:
    body = b"z" * 700
    raw = base256_header("b256", len(body)) + body + bytes(-len(body) % 512) + bytes(1024)
    assert listing(read_all(raw)) == [("b256", "file", 700, "")]
    assert tarfile_listing(raw) == [("b256", "file", 700, "")]


def test_negative_base256_size_is_refused() -> None:
    block = bytearray(base256_header("neg", 0))
    block[124] = 0xFF
    block[148:156] = b"        "
    block[148:156] = b"%06o\x00 " % sum(block)
    with pytest.raises(ArchiveError, match="negative base-256 size"):
        read_all(bytes(block) + bytes(1024))


def test_absurd_size_is_refused() -> None:
    raw = base256_header("huge", 1 << 60) + bytes(1024)
    with pytest.raises(ArchiveError, match="absurd"):
        read_all(raw)


def test_trailing_data_after_the_end_is_ignored() -> None:
    data = build([entry("a", b"1")], tarfile.GNU_FORMAT) + b"trailing garbage" * 100
    events = read_all(data, [300])
    assert isinstance(events[-1], ArchiveEnd)
    assert listing(events) == [("a", "file", 1, "")]


def test_end_without_zero_blocks_is_accepted() -> None:
    data = build([entry("a", b"1")], tarfile.GNU_FORMAT)
    data = data[:1024]  # header + padded data, no end marker
    events = read_all(data)
    assert isinstance(events[-1], ArchiveEnd) and events[-1].offset == 1024


def test_zero_block_then_a_header_is_refused() -> None:
    one = build([entry("a", b"1")], tarfile.GNU_FORMAT)[:1024]
    with pytest.raises(ArchiveError, match="zero block is followed"):
        read_all(one + bytes(512) + one)


def test_error_names_the_byte_offset() -> None:
    data = bytearray(build([entry("a", b"1"), entry("b", b"2")], tarfile.GNU_FORMAT))
    data[1024 + 3] ^= 0xFF
    with pytest.raises(ArchiveError, match=r"at byte 1024$"):
        read_all(bytes(data))


def test_skip_reports_skippable_and_accepts_skipped_input() -> None:
    body = b"q" * 5000
    data = build([entry("big", body), entry("small.json", b"{}")], tarfile.GNU_FORMAT)
    reader = TarReader()
    reader.feed(data[:600])  # header + 88 bytes of data
    header = reader.next_event()
    assert isinstance(header, MemberHeader) and header.size == 5000
    reader.skip_data()
    assert reader.next_event() is NEED_DATA
    skippable = reader.skippable()
    assert skippable == 5000 + (-5000 % 512) - 88
    reader.skip_input(skippable)
    reader.feed(data[600 + skippable :])
    reader.feed_eof()
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    assert isinstance(events[0], MemberEnd)
    assert isinstance(events[1], MemberHeader) and events[1].name == "small.json"
    with pytest.raises(UsageError):
        reader.skip_input(1)


@pytest.mark.parametrize("fed", [512, 600, 5000, 5500, 5632])
def test_skip_input_with_bytes_still_buffered(fed: int) -> None:
    """skip_data() right after the header, with part of the data (or padding) fed already."""
    body = b"q" * 5000
    data = build([entry("big", body), entry("small.json", b"{}")], tarfile.GNU_FORMAT)
    reader = TarReader()
    reader.feed(data[:fed])
    header = reader.next_event()
    assert isinstance(header, MemberHeader) and header.name == "big"
    reader.skip_data()
    skipped = reader.skippable()
    assert skipped == max(0, 5120 - (fed - 512))
    reader.skip_input(skipped)
    reader.feed(data[fed + skipped :])
    reader.feed_eof()
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    assert [type(e).__name__ for e in events] == [
        "MemberEnd",
        "MemberHeader",
        "MemberData",
        "MemberEnd",
        "ArchiveEnd",
    ]
    assert events[1].name == "small.json" and bytes(events[2].data) == b"{}"


def test_types() -> None:
    data = build(EDGE_SETS["links-forward"] + EDGE_SETS["dirs"], tarfile.GNU_FORMAT)
    types = {e.name: e.type for e in read_all(data) if isinstance(e, MemberHeader)}
    assert types["a/layer.tar"] is MemberType.SYMLINK
    assert types["h"] is MemberType.HARDLINK
    assert types["dir/"] is MemberType.DIRECTORY
    assert types["dir/f"] is MemberType.FILE


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("./manifest.json", "manifest.json"),
        ("/a//b/./c", "a/b/c"),
        ("a/../b", "b"),
        ("../../etc/passwd", "../../etc/passwd"),
        ("dir/", "dir"),
        ("./", ""),
        ("a/../../x", "../x"),
    ],
)
def test_normalize_member_path(name: str, path: str) -> None:
    assert normalize_member_path(name) == path


SAMPLE = (FIXTURES / "docker-v2-two-images.tar").read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=4096), min_size=1, max_size=20))
def test_any_chunking_gives_the_same_events(sizes: list[int]) -> None:
    assert read_all(SAMPLE, sizes) == read_all(SAMPLE)


def outcome(data: bytes, sizes: list[int]) -> list[tuple[str, str, int, str]] | ArchiveError:
    try:
        return listing(read_all(data, sizes))
    except ArchiveError as exc:
        return exc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, len(SAMPLE))),
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=5),
)
def test_corruption_gives_tarfiles_answer_or_our_error(
    flips: list[tuple[int, int]], cut: int | None, sizes: list[int]
) -> None:
    data = bytearray(SAMPLE)
    for position, mask in flips:
        data[position] ^= mask
    broken = bytes(data if cut is None else data[:cut])
    ours = outcome(broken, sizes)  # anything but ArchiveError propagates and fails the test
    if isinstance(ours, ArchiveError):
        return
    try:
        theirs = tarfile_listing(broken)
    except tarfile.TarError:
        pytest.fail(f"keeptar accepted what tarfile rejects: {ours}")
    assert normalise_dirs(ours) == normalise_dirs(theirs)
