"""Bad input: one line on stderr, a documented exit code, never a traceback.

The broken archives are made from a real `docker save` fixture by changing
exactly one thing each.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from archive_edit import members_of, rewrite_archive, with_new_config, write_tar
from conftest import fixture_path, run_keeptar

APP = fixture_path("docker-v2-app.tar")
ARCHIVE_ERROR = 3
VERIFY_ERROR = 4
USAGE_ERROR = 2


def rewrite(tmp_path: Path, change: dict[str, bytes | None], *, extra=()) -> Path:  # type: ignore[no-untyped-def]
    """The APP fixture with members replaced (bytes), removed (None), plus extra members."""
    return rewrite_archive(
        APP, tmp_path / "changed.tar", change, extra=extra, format=tarfile.GNU_FORMAT
    )


def manifest() -> list[dict[str, object]]:
    return json.loads(dict((m.name, d) for m, d in members_of(APP))["manifest.json"])  # type: ignore[arg-type]


def assert_clean_failure(result, code: int, words: str) -> None:  # type: ignore[no-untyped-def]
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert result.stdout == b""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("keeptar: error: ")
    assert words.lower() in lines[0].lower(), lines[0]


def inspect(path: Path | str, *args: str, data: bytes | None = None):  # type: ignore[no-untyped-def]
    if data is not None:
        return run_keeptar("inspect", *args, "-", input=data)
    return run_keeptar("inspect", *args, str(path))


def test_empty_input() -> None:
    assert_clean_failure(inspect("-", data=b""), ARCHIVE_ERROR, "empty input")


def test_random_bytes() -> None:
    noise = hashlib.sha512(b"keeptar").digest() * 64
    assert_clean_failure(inspect("-", data=noise), ARCHIVE_ERROR, "not a tar archive")


@pytest.mark.parametrize("via_pipe", [False, True], ids=["file", "pipe"])
def test_truncated_mid_header(tmp_path: Path, via_pipe: bool) -> None:
    data = APP.read_bytes()
    cut = data[: 512 * 6 + 100]  # inside a header block
    path = tmp_path / "cut.tar"
    path.write_bytes(cut)
    result = inspect("-", data=cut) if via_pipe else inspect(path)
    assert_clean_failure(result, ARCHIVE_ERROR, "truncated")


@pytest.mark.parametrize("via_pipe", [False, True], ids=["file", "pipe"])
def test_truncated_mid_layer(tmp_path: Path, via_pipe: bool) -> None:
    with tarfile.open(APP) as tar:
        layer = next(m for m in tar if m.name.endswith("layer.tar") and m.size > 5000)
    cut = APP.read_bytes()[: layer.offset_data + 4000]
    path = tmp_path / "cut.tar"
    path.write_bytes(cut)
    result = inspect("-", data=cut) if via_pipe else inspect(path)
    assert_clean_failure(result, ARCHIVE_ERROR, "truncated inside the data of member")


def test_corrupt_header_checksum(tmp_path: Path) -> None:
    data = bytearray(APP.read_bytes())
    with tarfile.open(APP) as tar:
        second = tar.getmembers()[1]
    data[second.offset + 10] ^= 0x55  # a byte of the name: the checksum no longer matches
    path = tmp_path / "corrupt.tar"
    path.write_bytes(bytes(data))
    result = inspect(path)
    assert_clean_failure(result, ARCHIVE_ERROR, f"bad tar header checksum at byte {second.offset}")


def test_tar_of_ordinary_files(tmp_path: Path) -> None:
    info = tarfile.TarInfo("notes/readme.txt")
    path = write_tar(tmp_path / "plain.tar", [(info, b"just a file\n")], format=tarfile.GNU_FORMAT)
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "not a container image archive")


def test_manifest_names_a_missing_config(tmp_path: Path) -> None:
    doc = manifest()
    config = str(doc[0]["Config"])
    path = rewrite(tmp_path, {config: None})
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, f"{config!r} is not in the archive")


def test_config_sha256_does_not_match_its_name(tmp_path: Path) -> None:
    doc = manifest()
    config = str(doc[0]["Config"])
    original = dict((m.name, d) for m, d in members_of(APP))[config]
    assert original is not None
    tampered = original.replace(b'"os":"linux"', b'"os":"plan9"')
    assert tampered != original
    path = rewrite(tmp_path, {config: tampered})
    assert_clean_failure(inspect(path), VERIFY_ERROR, "not the")


def test_invalid_json(tmp_path: Path) -> None:
    path = rewrite(tmp_path, {"manifest.json": b'[{"Config": "x.json",'})
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "invalid JSON")


def test_zip_file(tmp_path: Path) -> None:
    path = tmp_path / "image.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", "[]")
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "not a tar archive")


@pytest.mark.parametrize("via_pipe", [False, True], ids=["file", "pipe"])
def test_truncated_gzip(tmp_path: Path, via_pipe: bool) -> None:
    compressed = gzip.compress(APP.read_bytes())
    cut = compressed[: len(compressed) * 2 // 3]
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(cut)
    result = inspect("-", data=cut) if via_pipe else inspect(path)
    assert_clean_failure(result, ARCHIVE_ERROR, "truncated")


def test_manifest_symlink_outside_the_archive(tmp_path: Path) -> None:
    link = tarfile.TarInfo("manifest.json")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    path = rewrite(tmp_path, {"manifest.json": None}, extra=[(link, None)])
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "outside the archive")


def test_manifest_symlink_climbing_out(tmp_path: Path) -> None:
    link = tarfile.TarInfo("manifest.json")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc/passwd"
    path = rewrite(tmp_path, {"manifest.json": None}, extra=[(link, None)])
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "outside the archive")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "a/../../x/layer.tar"])
def test_layer_path_escaping_the_archive(tmp_path: Path, bad: str) -> None:
    doc = manifest()
    doc[0]["Layers"] = [bad, *list(doc[0]["Layers"])[1:]]  # type: ignore[call-overload]
    path = rewrite(tmp_path, {"manifest.json": json.dumps(doc).encode()})
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "escapes the archive")


def test_layer_symlink_loop(tmp_path: Path) -> None:
    a = tarfile.TarInfo("loop/a")
    a.type, a.linkname = tarfile.SYMTYPE, "b"
    b = tarfile.TarInfo("loop/b")
    b.type, b.linkname = tarfile.SYMTYPE, "a"
    doc = manifest()
    doc[0]["Layers"] = ["loop/a", *list(doc[0]["Layers"])[1:]]  # type: ignore[call-overload]
    path = rewrite(
        tmp_path, {"manifest.json": json.dumps(doc).encode()}, extra=[(a, None), (b, None)]
    )
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "symlink loop")


def test_layer_diff_id_mismatch_needs_verify(tmp_path: Path) -> None:
    with tarfile.open(APP) as tar:
        layer = next(m for m in tar if m.name.endswith("layer.tar"))
    data = bytearray(APP.read_bytes())
    data[layer.offset_data + 600] ^= 0x01  # inside the layer's own tar data
    path = tmp_path / "flipped.tar"
    path.write_bytes(bytes(data))
    assert inspect(path).returncode == 0  # layers are not read without --verify
    assert_clean_failure(inspect(path, "--verify"), VERIFY_ERROR, "diff ID")


def test_oversized_metadata_member_is_refused(tmp_path: Path) -> None:
    huge = b"[" + b" " * (9 << 20) + b"]"
    path = rewrite(tmp_path, {"manifest.json": huge})
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "over the 8 MiB cap")


def test_many_small_json_members_hit_the_total_cap(tmp_path: Path) -> None:
    blob = b"{" + b" " * ((4 << 20) - 2) + b"}"
    extra = []
    for number in range(20):
        info = tarfile.TarInfo(f"junk/{number}.json")
        extra.append((info, blob))
    path = rewrite(tmp_path, {}, extra=extra)
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "64 MiB cap")


def test_missing_path() -> None:
    assert_clean_failure(inspect("/nonexistent/image.tar"), USAGE_ERROR, "cannot open")


def test_directory_argument(tmp_path: Path) -> None:
    assert_clean_failure(inspect(tmp_path), USAGE_ERROR, "is a directory")


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", str(APP)],
        ["inspect", "--json", str(APP)],
        ["images"],
        ["images", "--json"],
        ["info"],
        ["info", "--json"],
        ["--version"],
        ["--help"],
        ["load", "--help"],
    ],
    ids=lambda args: " ".join(arg.rsplit("/", 1)[-1] for arg in args),
)
def test_broken_stdout_is_quiet(args: list[str], local_home: Path) -> None:
    """A reader that goes away (`keeptar images | head -1`): status 141, nothing on stderr."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "keeptar", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.stderr == b""
    assert result.returncode == 141


def test_head_closing_a_long_output_is_quiet(tmp_path: Path) -> None:
    """`keeptar inspect | head -1` where the text far exceeds the pipe buffer."""
    import subprocess
    import sys

    def many_layers(entry: dict[str, Any]) -> None:
        entry["Layers"] *= 1000

    def many_diff_ids(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"] *= 1000

    path = with_new_config(
        APP, tmp_path / "many.tar", many_diff_ids, edit_manifest=many_layers
    )
    full = run_keeptar("inspect", str(path))
    assert full.returncode == 0 and len(full.stdout) > 1 << 17  # 2x a pipe buffer
    script = '"$0" -m keeptar inspect "$1" | head -1; echo "status ${PIPESTATUS[0]}" >&2'
    result = subprocess.run(
        ["bash", "-c", script, sys.executable, str(path)], capture_output=True, timeout=120
    )
    assert result.stdout == full.stdout.splitlines(keepends=True)[0]
    assert result.stderr == b"status 141\n"


def test_the_capture_cap_is_configurable_and_reported() -> None:
    from keeptar.errors import ArchiveError
    from keeptar.formats import ArchiveScanner, read_images
    from keeptar.streaming.sources import open_source, run_tar_stream

    config = str(manifest()[0]["Config"])
    size = next(m.size for m, _ in members_of(APP) if m.name == config)
    scanner = ArchiveScanner(member_cap=size - 1)
    with open_source(APP) as source:
        run_tar_stream(source, scanner)
    with pytest.raises(ArchiveError, match=f"is {size} bytes, over the {size - 1}-byte cap"):
        read_images(scanner.scan)


# ---- issue 8 §4: endless input and hostile JSON nesting ------------------------------------


def _inspect_stream(command: list[str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """`keeptar inspect ARGS -` reading from the stdout of *command* (a real pipe)."""
    writer = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        return subprocess.run(
            [sys.executable, "-m", "keeptar", "inspect", *args, "-"],
            stdin=writer.stdout,
            capture_output=True,
            timeout=60,  # today's code never ends: the timeout is the failure
        )
    finally:
        writer.kill()
        writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()


def test_dev_zero_ends() -> None:
    """Endless zeros are an empty tar followed by more zeros: read no further than its end."""
    result = subprocess.run(
        [sys.executable, "-m", "keeptar", "inspect", "/dev/zero"],
        capture_output=True,
        timeout=60,
    )
    assert_clean_failure(result, ARCHIVE_ERROR, "no manifest.json")


@pytest.mark.parametrize("fixture", ["docker-v2-app.tar", "docker-v2-app.tar.gz"])
def test_a_pipe_that_never_ends_after_the_archive_is_given_up_on(fixture: str) -> None:
    archive = fixture_path(fixture)
    result = _inspect_stream(["sh", "-c", 'cat "$1"; exec cat /dev/zero', "-", str(archive)])
    assert_clean_failure(result, ARCHIVE_ERROR, "after the end of the archive")


def test_a_pipe_with_some_padding_after_the_archive_is_drained() -> None:
    """Trailing bytes under the limit (tar record padding and more) are read and ignored."""
    result = _inspect_stream(
        ["sh", "-c", 'cat "$1"; head -c 3000000 /dev/zero', "-", str(APP)], "--json"
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["images"]


DEEP = 200_000


def test_deeply_nested_manifest_is_a_bad_archive(tmp_path: Path) -> None:
    path = rewrite(tmp_path, {"manifest.json": b"[" * DEEP + b"]" * DEEP})
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "nested too deeply")


def deep_config_archive(tmp_path: Path) -> Path:
    """APP with its config replaced by a deeply nested one (named by its digest, as it must)."""
    doc = manifest()
    old = str(doc[0]["Config"])
    config = b'{"architecture":"amd64","os":"linux","x":' + b"[" * DEEP + b"]" * DEEP + b"}"
    new = hashlib.sha256(config).hexdigest() + ".json"
    doc[0]["Config"] = new
    out = []
    for info, data in members_of(APP):
        if info.name == old:
            info.name, data = new, config
        elif info.name == "manifest.json":
            data = json.dumps(doc).encode()
        out.append((info, data))
    return write_tar(tmp_path / "deep-config.tar", out)


def test_deeply_nested_config_is_a_bad_archive(tmp_path: Path) -> None:
    path = deep_config_archive(tmp_path)
    assert_clean_failure(inspect(path), ARCHIVE_ERROR, "nested too deeply")
    assert_clean_failure(inspect("-", data=path.read_bytes()), ARCHIVE_ERROR, "nested too deeply")


def test_verify_needs_a_scan_that_hashed() -> None:
    from keeptar.formats import ArchiveScanner, read_images
    from keeptar.streaming.sources import open_source, run_tar_stream

    unhashed = ArchiveScanner()
    with open_source(APP) as source:
        run_tar_stream(source, unhashed)
    assert not unhashed.scan.digested
    with pytest.raises(ValueError, match=r"digest=True"):
        read_images(unhashed.scan, verify=True)

    hashed = ArchiveScanner(digest=True)
    with open_source(APP) as source:
        run_tar_stream(source, hashed)
    assert hashed.scan.digested
    read_images(hashed.scan, verify=True)  # the real fixture's layers match
