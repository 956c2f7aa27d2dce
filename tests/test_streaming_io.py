"""Whole-stream decompression and the byte sources at the edge of the streaming core."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from archive_edit import members_of
from conftest import FIXTURES
from keeptar import inspect_archive
from keeptar.errors import ArchiveError
from keeptar.formats import ArchiveScanner
from keeptar.streaming import NEED_DATA
from keeptar.streaming.decompress import Compression, Decompressor, detect_compression
from keeptar.streaming.sources import READ_AFTER_SKIP, READ_SIZE, ByteSource, run_tar_stream

APP = (FIXTURES / "docker-v2-app.tar").read_bytes()


def decompress(kind: Compression, data: bytes, step: int = 4096) -> tuple[bytes, int]:
    d = Decompressor(kind)
    out, biggest = [], 0

    def drain() -> None:
        nonlocal biggest
        while (chunk := d.next_chunk()) is not NEED_DATA and chunk:
            out.append(chunk)
            biggest = max(biggest, len(chunk))

    for i in range(0, len(data), step):
        d.feed(data[i : i + step])
        drain()
    d.feed_eof()
    drain()
    return b"".join(out), biggest


def gzip_two_members(data: bytes) -> bytes:
    return gzip.compress(data[:1000]) + gzip.compress(data[1000:])


COMPRESSORS = {
    Compression.GZIP: gzip_two_members,
    Compression.BZIP2: lambda d: bz2.compress(d[:10]) + bz2.compress(d[10:]),
    Compression.XZ: lambda d: lzma.compress(d[:10]) + lzma.compress(d[10:]),
    Compression.ZSTD: lambda d: (
        zstandard.ZstdCompressor().compress(d[:10]) + zstandard.ZstdCompressor().compress(d[10:])
    ),
}


@pytest.mark.parametrize("kind", list(COMPRESSORS), ids=lambda k: k.value)
@pytest.mark.parametrize("step", [1, 333, 1 << 20])
def test_concatenated_members_are_all_decompressed(kind: Compression, step: int) -> None:
    packed = COMPRESSORS[kind](APP)
    assert detect_compression(packed[:6]) is kind
    assert decompress(kind, packed, step)[0] == APP


@pytest.mark.parametrize("kind", list(COMPRESSORS), ids=lambda k: k.value)
def test_truncation_is_an_error(kind: Compression) -> None:
    packed = COMPRESSORS[kind](APP)
    with pytest.raises(ArchiveError, match=f"truncated {kind.value}|corrupt {kind.value}"):
        decompress(kind, packed[: len(packed) - 7])


def test_gzip_padding_is_ignored_and_garbage_is_not() -> None:
    packed = gzip.compress(APP)
    assert decompress(Compression.GZIP, packed + bytes(5000))[0] == APP
    with pytest.raises(ArchiveError, match="garbage after the end"):
        decompress(Compression.GZIP, packed + b"not gzip at all")


def test_gzip_from_the_command_line_tool() -> None:
    packed = subprocess.run(["gzip", "-c"], input=APP, capture_output=True, check=True).stdout
    assert decompress(Compression.GZIP, packed)[0] == APP


@pytest.mark.parametrize(
    "kind", [Compression.GZIP, Compression.ZSTD, Compression.XZ], ids=lambda k: k.value
)
def test_a_bomb_comes_out_in_bounded_chunks(kind: Compression) -> None:
    zeros = bytes(256 << 20)
    packed = {
        Compression.GZIP: lambda: gzip.compress(zeros, 9),
        Compression.ZSTD: lambda: zstandard.ZstdCompressor(level=19).compress(zeros),
        Compression.XZ: lambda: lzma.compress(zeros),
    }[kind]()
    d = Decompressor(kind)
    d.feed(packed)
    d.feed_eof()
    total = biggest = 0
    while (chunk := d.next_chunk()) is not NEED_DATA and chunk:
        total += len(chunk)
        biggest = max(biggest, len(chunk))
    assert total == len(zeros)
    # never the whole 256 MiB at once: 1 MiB for zlib/lzma; zstd is fed a few whole
    # blocks at a time (each regenerates at most 128 KiB), so one more block at most
    assert biggest <= (1 << 20 if kind is not Compression.ZSTD else (1 << 20) + (128 << 10))


def zstd_payload() -> bytes:
    """Zeros (RLE blocks), random bytes (raw blocks) and text (compressed blocks)."""
    text = b"".join(b"line %d of a layer that compresses well\n" % i for i in range(40000))
    return bytes(700_000) + os.urandom(900_000) + text + bytes(300_000)


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["-19"],
        ["--ultra", "-22"],
        ["--long=24"],
        ["--no-check"],
        ["--no-content-size"],
        ["-T2", "--block-size=100KiB"],
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("step", [1, 3, 4096, 1 << 20])
def test_zstd_streams_from_the_cli_in_any_chunking(flags: list[str], step: int) -> None:
    """Block boundaries are found in frames of every shape the zstd tool writes."""
    payload = zstd_payload()
    if step == 1:
        payload = payload[:200_000] + payload[700_000:760_000]  # byte at a time is slow
    packed = subprocess.run(
        ["zstd", "-c", "-q", *flags], input=payload, capture_output=True, check=True
    ).stdout
    two_frames = packed + zstandard.ZstdCompressor(write_checksum=True).compress(payload[:5000])
    out, biggest = decompress(Compression.ZSTD, two_frames, step)
    assert out == payload + payload[:5000]
    assert biggest <= (1 << 20) + (128 << 10)


@pytest.mark.parametrize("cut", [6, 9, 100, 70_000, -5, -1])
def test_zstd_truncated_anywhere_is_an_error(cut: int) -> None:
    packed = zstandard.ZstdCompressor(write_checksum=True).compress(zstd_payload())
    with pytest.raises(ArchiveError, match=r"truncated zstd|corrupt zstd"):
        decompress(Compression.ZSTD, packed[:cut], 777)


class CountingFile(io.RawIOBase):
    """A seekable file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        n = self._file.readinto(buffer)
        self.read_bytes += n or 0
        return n or 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def make_big_sparse_archive(path: Path, layer_size: int) -> None:
    """A docker-v2 archive whose one layer is *layer_size* bytes of a sparse file."""
    with open(path, "wb") as out:
        for info, data in members_of(FIXTURES / "docker-v2-untagged.tar"):
            if info.name.endswith("layer.tar"):
                info.size = layer_size
                out.write(info.tobuf(tarfile.GNU_FORMAT))
                out.seek(layer_size + (-layer_size % 512), os.SEEK_CUR)
                continue
            out.write(info.tobuf(tarfile.GNU_FORMAT))
            if data:
                out.write(data + bytes(-len(data) % 512))
        out.write(bytes(1024))


def test_a_seekable_file_skips_layers_without_reading_them(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    make_big_sparse_archive(path, 3 << 30)  # 6 GiB of layers, sparse on disk
    stream = CountingFile(path)
    with stream:
        info = inspect_archive(stream)  # type: ignore[arg-type]
    assert [layer.size for layer in info.images[0].layers] == [3 << 30, 3 << 30]
    assert stream.read_bytes < 8 << 20


def test_a_seekable_file_reads_little_after_each_skipped_layer(tmp_path: Path) -> None:
    """After seeking over a layer only the next header's neighbourhood is read, not a
    whole READ_SIZE: 40 layers cost a few MiB read (each hashed twice by a plain-file
    load's change check), not 40."""
    path = tmp_path / "layers.tar"
    layers = [f"{number:064x}/layer.tar" for number in range(40)]
    with open(path, "wb") as out:
        for name in layers:
            info = tarfile.TarInfo(name)
            info.size = 4 << 20
            out.write(info.tobuf(tarfile.GNU_FORMAT))
            out.seek(info.size, os.SEEK_CUR)  # sparse: 4 MiB of zeros
        out.write(bytes(1024))
    with tarfile.open(path) as tar:
        expected = tar.getnames()
    stream = CountingFile(path)
    scanner = ArchiveScanner()
    with stream:
        run_tar_stream(ByteSource(stream, "layers.tar"), scanner)  # type: ignore[arg-type]
    assert scanner.scan.order == expected == layers
    assert stream.read_bytes < READ_SIZE + len(layers) * READ_AFTER_SKIP + (1 << 20)


def test_pipe_source_splices_skipped_data(tmp_path: Path) -> None:
    path = tmp_path / "big.tar"
    make_big_sparse_archive(path, 64 << 20)
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        source = ByteSource(cat.stdout, "<pipe>")  # type: ignore[arg-type]
        assert source.is_pipe and not source.seekable
        from keeptar.archive import inspect_source

        info = inspect_source(source)
    assert cat.returncode == 0  # the pipe was drained: no EPIPE upstream
    assert info.images[0].layers[0].size == 64 << 20
    assert source.position == path.stat().st_size
