"""Resuming an interrupted ``keeptar load`` on Arvados (arv-put's resume cache).

Real parts only: the CLI in a subprocess, the real SDK over real HTTP, the emulator's
keepstores checking signatures on HEAD as keepstore does.  A load is killed (SIGKILL,
from a wrapper around the real CLI, as in ``test_registration``) after some blocks
were stored; the re-run must PUT only the blocks the first run had not stored.
Expected blocks and PDHs come from the archive's bytes (hashlib, tarfile), and what
was PUT from the emulator's own log of keepstore requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from archive_edit import with_new_config
from conftest import fixture_path, run_keeptar

BLOCK = 1 << 26  # Keep's block size
SIGNED = re.compile(r"^([0-9a-f]{32})\+([0-9]+)\+A([0-9a-f]{40})@([0-9a-f]{8})$")

# The real CLI with ArvadosBackend.put_block wrapped: blocks are stored one at a time,
# and when the Nth has been stored the process kills itself (SIGKILL) before keeptar
# sees the answer (a moment later, so that the blocks before it were seen: the test
# knows which blocks a re-run may skip).  Test harness only.
_KILL_AFTER_PUTS = """
import os, signal, sys, threading, time
from keeptar.backends.arvados import ArvadosBackend
original = ArvadosBackend.put_block
after = int(sys.argv[1])
calls = [0]
lock = threading.Lock()
def put_block(self, *args, **kwargs):
    with lock:
        result = original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == after:
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGKILL)
    return result
ArvadosBackend.put_block = put_block
sys.argv = ["keeptar", *sys.argv[2:]]
from keeptar.cli import main
main()
"""


def multi_block_archive(tmp_path: Path, mib: int = 200) -> Path:
    """A real docker save with its layer replaced by *mib* MiB no other test stored
    (so the archive spans several 64 MiB blocks, none of them in Keep yet)."""
    seed = os.urandom(16)
    payload = hashlib.shake_256(seed).digest(mib << 20)

    def comment(config: dict[str, Any]) -> None:
        config["comment"] = f"keeptar resume test {seed.hex()}"

    return with_new_config(
        fixture_path("docker-v2-app.tar"), tmp_path / "big.tar", comment, layers={0: payload}
    )


def file_blocks(path: Path) -> list[str]:
    """``md5+size`` of each 64 MiB block of *path*, as Keep names them."""
    out = []
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            out.append(f"{hashlib.md5(chunk).hexdigest()}+{len(chunk)}")
    return out


def expected_pdh(path: Path) -> str:
    """The PDH of a clean load of *path*: one file ``<image id>.tar`` of its blocks."""
    with tarfile.open(path) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    name = "sha256:" + entry["Config"].rsplit("/", 1)[-1].removesuffix(".json") + ".tar"
    size = path.stat().st_size
    escaped = re.sub(r"[\\:\000-\040]", lambda m: f"\\{ord(m.group(0)):03o}", name)  # as the SDK
    manifest = f". {' '.join(file_blocks(path))} 0:{size}:{escaped}\n".encode()
    return f"{hashlib.md5(manifest).hexdigest()}+{len(manifest)}"


class Cluster:
    """The emulator as one user, with a private cache directory."""

    def __init__(self, emulator: Any, tmp_path: Path) -> None:
        self.emulator = emulator
        self.cache_home = tmp_path / "xdg-cache"
        self.env = {
            **emulator.env(emulator.alice),
            "KEEPTAR_RETRIES": "2",
            "XDG_CACHE_HOME": str(self.cache_home),
        }
        self.outputs: list[bytes] = []

    @property
    def resume_dir(self) -> Path:
        return self.cache_home / "keeptar" / "resume"

    def cache_files(self) -> list[Path]:
        if not self.resume_dir.exists():
            return []
        return sorted(p for p in self.resume_dir.iterdir())

    def puts(self) -> int:
        return len(self.emulator.keep_put_hashes)

    def put_since(self, mark: int) -> list[str]:
        return self.emulator.keep_put_hashes[mark:]

    def killed_load(
        self, after: int, *args: str, stdin: Any = None, resume: str = "--resume"
    ) -> None:
        """A load (``--resume`` unless *resume* says otherwise) killed after *after* PUTs."""
        process = subprocess.run(
            [
                sys.executable,
                "-c",
                _KILL_AFTER_PUTS,
                str(after),
                "load",
                resume,
                "--no-progress",
                *args,
            ],
            stdin=stdin,
            capture_output=True,
            env={**os.environ, **self.env},
            timeout=300,
        )
        assert process.returncode == -signal.SIGKILL, process.stderr
        self.outputs += [process.stdout, process.stderr]

    def load(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        result = run_keeptar("load", "--resume", "--no-progress", "--json", *args, env=self.env)
        self.outputs += [result.stdout, result.stderr]
        assert result.returncode == 0, result.stderr
        return result

    def cached(self) -> list[str]:
        """The signed locators the cache file holds (whole lines that are one)."""
        (path,) = self.cache_files()
        lines = path.read_bytes().decode(errors="replace").split("\n")
        return [line for line in lines if SIGNED.match(line)]

    def assert_no_secret_printed(self, signatures: list[str]) -> None:
        for output in self.outputs:
            text = output.decode(errors="replace")
            assert not re.search(r"\+A[0-9a-f]{6}", text), text
            for signature in signatures:
                assert signature not in text


def md5s(locators: list[str]) -> set[str]:
    return {locator[:32] for locator in locators}


def signatures(locators: list[str]) -> list[str]:
    return [m.group(3) for m in map(SIGNED.match, locators) if m]


def test_a_killed_load_resumes_uploading_only_the_missing_blocks(
    emulator: Any, tmp_path: Path
) -> None:
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    blocks = file_blocks(archive)
    assert len(blocks) >= 4
    mark = cluster.puts()
    cluster.killed_load(2, str(archive))
    first = cluster.put_since(mark)
    # The cache: one 0600 file in a 0700 directory, holding what the killed run stored.
    (path,) = cluster.cache_files()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cluster.resume_dir.stat().st_mode) == 0o700
    cached = cluster.cached()
    assert 1 <= len(cached) < len(blocks)
    assert md5s(cached) <= set(first)
    mark = cluster.puts()
    result = json.loads(cluster.load(str(archive)).stdout)
    rerun = cluster.put_since(mark)
    # Only the blocks the killed run had not recorded crossed the network again.
    assert set(rerun) == md5s(blocks) - md5s(cached)
    assert result["portable_data_hash"] == expected_pdh(archive)
    assert cluster.cache_files() == []  # registered: the cache is deleted
    # A clean load without the cache stores every block, and the same collection content.
    mark = cluster.puts()
    clean = json.loads(cluster.load("--force", "--no-resume", str(archive)).stdout)
    assert set(cluster.put_since(mark)) == md5s(blocks)
    assert clean["portable_data_hash"] == result["portable_data_hash"]
    assert clean["uuid"] != result["uuid"]
    cluster.assert_no_secret_printed(signatures(cached))


def test_expired_and_deleted_blocks_are_uploaded_again(emulator: Any, tmp_path: Path) -> None:
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    blocks = file_blocks(archive)
    cluster.killed_load(3, str(archive))
    cached = cluster.cached()
    assert len(cached) >= 2
    (path,) = cluster.cache_files()
    # One entry whose signature has expired (as the client sees it: its @expiry is past) ...
    expired = cached[0]
    past = format(int(time.time()) - 60, "08x")
    text = path.read_text().replace(expired, expired[:-8] + past)
    path.write_text(text)
    # ... and one whose block the cluster lost (deleted from every keepstore volume).
    lost = cached[1][:32]
    for folder in emulator.block_dirs:
        (folder / lost).unlink(missing_ok=True)
    mark = cluster.puts()
    result = json.loads(cluster.load(str(archive)).stdout)
    rerun = cluster.put_since(mark)
    assert set(rerun) == md5s(blocks) - md5s(cached[2:])
    assert {expired[:32], lost} <= set(rerun)
    assert result["portable_data_hash"] == expected_pdh(archive)
    assert all((folder / lost).exists() for folder in emulator.block_dirs)
    assert cluster.cache_files() == []
    cluster.assert_no_secret_printed(signatures(cached))


def test_a_garbled_cache_is_ignored(emulator: Any, tmp_path: Path) -> None:
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    blocks = file_blocks(archive)
    cluster.killed_load(2, str(archive))
    (path,) = cluster.cache_files()
    cached = cluster.cached()
    # Torn and garbled lines around the good ones: the good ones are still used.
    lines = path.read_text().split("\n")
    torn = cached[0][:50]
    garbage = ["\x00\xff not a locator", cached[0][:40] + "+A" + "g" * 40 + "@zz", "+" * 300]
    path.write_bytes(
        "\n".join([lines[0], *garbage, *lines[1:-1], ""]).encode("latin-1") + torn.encode()
    )
    mark = cluster.puts()
    cluster.load(str(archive))
    assert set(cluster.put_since(mark)) == md5s(blocks) - md5s(cached)
    # A file that is garbage from its first byte: nothing is used, the load succeeds.
    (tmp_path / "two").mkdir()
    archive = multi_block_archive(tmp_path / "two")
    blocks = file_blocks(archive)
    cluster.killed_load(2, str(archive))
    (path,) = cluster.cache_files()
    cached = cluster.cached()
    path.write_bytes(os.urandom(4096) + b"\n" + "\n".join(cached).encode() + b"\n")
    mark = cluster.puts()
    result = json.loads(cluster.load(str(archive)).stdout)
    assert set(cluster.put_since(mark)) == md5s(blocks)
    assert result["portable_data_hash"] == expected_pdh(archive)
    assert cluster.cache_files() == []
    cluster.assert_no_secret_printed(signatures(cached))


def test_no_resume_neither_reads_nor_writes_the_cache(emulator: Any, tmp_path: Path) -> None:
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    blocks = file_blocks(archive)
    cluster.killed_load(2, "--no-resume", str(archive))
    assert cluster.cache_files() == []  # not written
    cluster.killed_load(2, str(archive))
    (path,) = cluster.cache_files()
    before = path.read_bytes()
    assert cluster.cached()
    mark = cluster.puts()
    cluster.load("--no-resume", str(archive))
    assert set(cluster.put_since(mark)) == md5s(blocks)  # not read: everything uploaded
    assert path.read_bytes() == before  # nor written, nor deleted
    cluster.assert_no_secret_printed(signatures(cluster.cached()))


def test_without_resume_a_load_keeps_no_cache_on_disk(emulator: Any, tmp_path: Path) -> None:
    """Issue 9: by default a load keeps no cache on disk; a re-run uploads every block."""
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    blocks = file_blocks(archive)
    cluster.killed_load(2, str(archive), resume="--no-progress")  # no --resume given
    assert not cluster.resume_dir.exists()
    mark = cluster.puts()
    done = run_keeptar("load", "--no-progress", str(archive), env=cluster.env)
    assert done.returncode == 0, done.stderr
    assert set(cluster.put_since(mark)) == md5s(blocks)
    assert not cluster.resume_dir.exists()


def test_standard_input_keeps_no_cache(emulator: Any, tmp_path: Path) -> None:
    """Standard input has no identity a re-run could recognise, even from a file."""
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    with open(archive, "rb") as stdin:
        cluster.killed_load(2, "-", stdin=stdin)
    assert not cluster.resume_dir.exists()


def test_a_head_that_fails_is_an_error_that_names_no_signature(
    emulator: Any, tmp_path: Path
) -> None:
    """A HEAD nobody answers is a backend error (exit 5), as for has_block everywhere:
    never taken for "missing".  The SDK's message names the signed locator; ours must not."""
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    blocks = file_blocks(archive)
    cluster.killed_load(2, str(archive))
    cached = cluster.cached()
    fault = emulator.inject("HEAD", "/keep/", status=500, times=1000)
    try:
        failed = run_keeptar("load", "--resume", "--no-progress", str(archive), env=cluster.env)
    finally:
        fault.times = 0
    cluster.outputs += [failed.stdout, failed.stderr]
    assert failed.returncode == 5, failed.stderr
    message = failed.stderr.decode()
    assert message.startswith("keeptar: error: looking for block ") and message.count("\n") == 1
    recorded = cluster.cached()
    assert recorded[: len(cached)] == cached  # kept for the next run, with what it stored
    mark = cluster.puts()
    cluster.load(str(archive))
    assert set(cluster.put_since(mark)) == md5s(blocks) - md5s(recorded)
    cluster.assert_no_secret_printed(signatures(recorded))


def test_a_compressed_file_resumes_too(emulator: Any, tmp_path: Path) -> None:
    """A compressed file is stored decompressed in one pass; the blocks of that stream
    resume as a plain file's (the cache is keyed on the compressed file)."""
    cluster = Cluster(emulator, tmp_path)
    archive = multi_block_archive(tmp_path)
    blocks = file_blocks(archive)
    subprocess.run(["zstd", "-q", "-1", "--rm", str(archive)], check=True, timeout=120)
    compressed = archive.with_name(archive.name + ".zst")
    cluster.killed_load(2, str(compressed))
    cached = cluster.cached()
    assert 1 <= len(cached) < len(blocks)
    mark = cluster.puts()
    result = json.loads(cluster.load(str(compressed)).stdout)
    assert set(cluster.put_since(mark)) == md5s(blocks) - md5s(cached)
    subprocess.run(["zstd", "-q", "-d", str(compressed)], check=True, timeout=120)
    assert result["portable_data_hash"] == expected_pdh(archive)
    assert cluster.cache_files() == []
    cluster.assert_no_secret_printed(signatures(cached))


def test_a_cache_of_another_token_or_near_expiry_is_not_used(tmp_path: Path) -> None:
    """Signatures are bound to the token: a cache written with another token (same user)
    is not used (keepstore would answer its HEADs 400, an error); nor is a signature that
    expires within MIN_VALIDITY (the collection is created with it later)."""
    from keeptar.keep.resume import MIN_VALIDITY, ResumeCache, ResumeScope

    source = tmp_path / "image.tar"
    source.write_bytes(b"x" * 100)
    status = source.stat()
    heads: list[str] = []

    def head(locator: str) -> bool:
        heads.append(locator)
        return True

    def cache(credential: str) -> ResumeCache:
        scope = ResumeScope("cluster.example:443", "zzzzz-tpzed-000000000000001", credential)
        return ResumeCache(scope, str(source), status, BLOCK, head=head, directory=tmp_path / "c")

    now = int(time.time())
    fresh = "a" * 32 + "+100+A" + "1" * 40 + "@" + format(now + 2 * MIN_VALIDITY, "08x")
    soon = "b" * 32 + "+100+A" + "2" * 40 + "@" + format(now + MIN_VALIDITY // 2, "08x")
    writer = cache("token-one")
    writer.record(fresh)
    writer.record(soon)
    writer.record("c" * 32 + "+100")  # unsigned: not recorded
    writer.close()
    assert stat.S_IMODE(writer.path.stat().st_mode) == 0o600
    assert writer.path.read_text().count("\n") == 3  # header and two locators
    same = cache("token-one")
    assert same.entries == 1 and same.pending
    assert same.stored_locator("b" * 32 + "+100") is None  # expires too soon: uploaded
    assert same.stored_locator("a" * 32 + "+100") == fresh and heads == [fresh]
    assert not same.pending
    other = cache("token-two")
    assert other.entries == 0 and not other.pending
    assert other.stored_locator("a" * 32 + "+100") is None and heads == [fresh]
    other.record(fresh)  # the file is started afresh for the new token
    other.close()
    assert cache("token-one").entries == 0 and cache("token-two").entries == 1
    other.discard()
    assert not other.path.exists()
