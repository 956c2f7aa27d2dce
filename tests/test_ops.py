"""Operations: secrets kept from child processes and messages, read-only catalog access,
garbage collection of the embedded store, docker-mode PDHs, and arv-keepdocker habits."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import arv_keepdocker, docker_load, fixture_path, run_keeptar
from keeptar._subprocess import child_environment, is_secret_name

APP = fixture_path("docker-v2-app.tar")


def keeptar_on(emulator: Any, *args: str, account: Any = None, **env: str) -> Any:
    """Run keeptar against *emulator* as *account* (Alice by default)."""
    return run_keeptar(
        *args, env={**emulator.env(account or emulator.alice), "KEEPTAR_RETRIES": "1", **env}
    )


# ---- §5 secrets and messages --------------------------------------------------------------


def test_secret_variable_names() -> None:
    for name in (
        "ARVADOS_API_TOKEN",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
        "SSH_AUTH_SOCK",
        "API_KEY",
        "REGISTRY_PASS",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        assert is_secret_name(name), name
    for name in ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "PATH", "HOME", "PWD"):
        assert not is_secret_name(name), name
    kept = child_environment({"PATH": "/bin", "ARVADOS_API_TOKEN": "t", "DOCKER_HOST": "unix://x"})
    assert kept == {"PATH": "/bin", "DOCKER_HOST": "unix://x"}


FAKE_DOCKER = """#!/bin/sh
# A stand-in docker: records its environment, then fails saying every secret it got.
env > "$DUMP_DIR/env.$1"
case "$1" in
  image) echo sha256:{image_id}; exit 0 ;;
esac
echo "Error response from daemon: token=$ARVADOS_API_TOKEN leaked=$LEAK_ME" >&2
echo "and the known token: {token}" >&2
exit 1
"""


def test_docker_gets_no_credentials_and_its_stderr_is_scrubbed(
    emulator: Any, tmp_path: Path
) -> None:
    token = emulator.alice.token
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(image_id="ab" * 32, token=token))
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    result = keeptar_on(
        emulator,
        "load",
        "--from",
        "docker",
        "kt/secret:1",
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        DUMP_DIR=str(tmp_path),
        DOCKER_HOST="unix:///nowhere/docker.sock",
        MY_SERVICE_SECRET="hunter2-the-secret",
        LEAK_ME="not-a-secret-name",
    )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("keeptar: error: docker save sha256:abab") and err.count("\n") == 1
    assert token not in err and "***" in err
    assert "not-a-secret-name" in err  # ordinary values are shown as they are
    for command in ("image", "save"):
        seen = dict(
            line.split("=", 1)
            for line in (tmp_path / f"env.{command}").read_text().splitlines()
            if "=" in line
        )
        assert "ARVADOS_API_TOKEN" not in seen and "MY_SERVICE_SECRET" not in seen
        assert token not in "\n".join(seen.values())
        assert seen["DOCKER_HOST"] == "unix:///nowhere/docker.sock"
        assert seen["PATH"].startswith(str(bin_dir)) and "HOME" in seen


@pytest.mark.parametrize("command", [["images"], ["info"], ["load", str(APP)]])
def test_a_refused_token_says_so(emulator: Any, command: list[str]) -> None:
    secret = "s3cretpart" * 4
    bad = f"v2/{emulator.uuid_prefix}-gj3su-000000000000001/{secret}"
    result = keeptar_on(emulator, *command, ARVADOS_API_TOKEN=bad)
    err = result.stderr.decode()
    assert result.returncode == 5, err
    assert err.count("\n") == 1 and err.startswith("keeptar: error: ")
    assert "the API server refused the token (401 Not logged in)" in err
    assert secret not in err and "cannot reach" not in err


def test_a_403_says_the_token_was_refused_only_when_the_token_is_the_reason(
    emulator: Any,
) -> None:
    # Rails answers a bare "Forbidden" when the token's scopes (or its user's rights)
    # do not allow a request; "Permission denied: …" is about the object instead.
    def info_answered_403(message: str) -> subprocess.CompletedProcess[bytes]:
        fault = emulator.inject(
            "GET", "/arvados/v1/users/current", status=403, message=message, times=1
        )
        try:
            done = keeptar_on(emulator, "info", KEEPTAR_RETRIES="0")
        finally:
            unanswered, fault.times = fault.times, 0
        assert unanswered == 0  # keeptar did get the 403
        return done

    scoped = info_answered_403("Forbidden")
    assert scoped.returncode == 5
    assert b"refused the token for this request (403 Forbidden)" in scoped.stderr
    denied = info_answered_403("Permission denied")
    assert denied.returncode == 5 and b"Permission denied" in denied.stderr
    assert b"token" not in denied.stderr


# ---- issue 9 §4: the same bytes as arv-keepdocker ------------------------------------------


def test_docker_mode_stores_what_arv_keepdocker_stores(emulator: Any, dockerd: str) -> None:
    env = {**os.environ, **emulator.env(emulator.alice), "DOCKER_HOST": dockerd}
    reference = docker_load(env, APP, "kt/app:2.0", rename="kt/samebytes")
    uuid = arv_keepdocker(env, reference)
    theirs = emulator.api(emulator.alice).collections().get(uuid=uuid).execute()
    ours = keeptar_on(
        emulator, "load", "--json", "--force", "--from", "docker", reference, DOCKER_HOST=dockerd
    )
    assert ours.returncode == 0, ours.stderr
    doc = json.loads(ours.stdout)
    assert doc["portable_data_hash"] == theirs["portable_data_hash"]
    assert doc["repo_tag"] == reference  # the name comes from the argument
    links = (
        emulator.api(emulator.alice)
        .links()
        .list(filters=[["head_uuid", "=", doc["uuid"]]])
        .execute()["items"]
    )
    assert sorted(link["name"] for link in links) == sorted([doc["image_id"], reference])
    by_id = keeptar_on(
        emulator,
        "load",
        "--json",
        "--force",
        "--from",
        "docker",
        doc["image_id"][:19],
        DOCKER_HOST=dockerd,
    )
    assert by_id.returncode == 0, by_id.stderr
    assert json.loads(by_id.stdout)["portable_data_hash"] == theirs["portable_data_hash"]
    assert json.loads(by_id.stdout)["repo_tag"] is None  # an ID names no repository


# ---- §6 a full disk ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 4 MiB tmpfs of its own, so it can be filled up (needs root, as dockerd does)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_up(disk: Path) -> None:
    with open(disk / "filler", "wb") as out:
        try:
            while True:
                out.write(bytes(1 << 16))
                out.flush()
        except OSError:
            pass
    assert os.statvfs(disk).f_bavail == 0


@pytest.mark.parametrize("leftovers", [False, True])
def test_reading_commands_work_on_a_full_disk(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch, leftovers: bool
) -> None:
    home = small_disk / "home"
    monkeypatch.setenv("KEEPTAR_HOME", str(home))
    monkeypatch.setenv("KEEPTAR_BACKEND", "local")
    loaded = run_keeptar("load", "--json", str(APP))
    assert loaded.returncode == 0, loaded.stderr
    uuid = json.loads(loaded.stdout)["uuid"]
    fill_up(small_disk)
    if leftovers:  # a reader that failed before left a stub index behind
        (home / "catalog.sqlite3-shm").write_bytes(b"")
        (home / "catalog.sqlite3-wal").write_bytes(b"")
    listed = run_keeptar("images", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["collection"] for row in json.loads(listed.stdout)] == [uuid]
    inspected = run_keeptar("inspect", "--json", uuid)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["images"][0]["repo_tags"] == ["kt/app:2.0"]
    assert run_keeptar("info").returncode == 0
    writing = run_keeptar("load", "--force", str(APP))
    assert writing.returncode == 5 and writing.stderr.count(b"\n") == 1, writing.stderr


def test_reading_a_fresh_home_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "never-made"
    result = run_keeptar(
        "images", "--json", env={"KEEPTAR_HOME": str(home), "KEEPTAR_BACKEND": "local"}
    )
    assert result.returncode == 0 and result.stdout == b"[]\n", result.stderr
    assert not home.exists()


# ---- §6 keeptar gc -------------------------------------------------------------------------


def gc(*args: str) -> dict[str, Any]:
    result = run_keeptar("gc", "--json", *args)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def block_files(home: Path) -> set[str]:
    return {p.name for p in (home / "keep").glob("???/*") if p.parent.name != "tmp"}


def test_gc_deletes_what_a_failed_load_left(local_home: Path, tmp_path: Path) -> None:
    kept = run_keeptar("load", "--json", str(APP))
    assert kept.returncode == 0, kept.stderr
    uuid = json.loads(kept.stdout)["uuid"]
    stored = block_files(local_home)
    # A load that fails after a block is stored: the cluster refuses the format.
    from test_load import big_layer_archive

    big = big_layer_archive(tmp_path / "big.tar", 70)
    (local_home / "config.json").write_text('{"docker_image_formats": ["v1"]}')
    with open(big, "rb") as stdin:
        failed = run_keeptar("load", "-", stdin=stdin)
    assert failed.returncode == 7, failed.stderr
    (local_home / "config.json").unlink()
    orphans = block_files(local_home) - stored
    assert orphans, "the failed loads left no blocks to collect"

    dead = local_home / "keep" / "tmp" / "4194303.1"  # a half-written block of no process
    dead.write_bytes(b"half a block")
    young = gc()  # the default grace: two weeks
    assert young["stale_temporary_files"] == 1 and not dead.exists()
    assert young["deleted"]["blocks"] == 0 and young["kept_recent"]["blocks"] == len(orphans)
    assert young["kept_referenced"]["blocks"] == len(stored)
    dry = gc("--grace", "0", "--dry-run")
    assert dry["deleted"]["blocks"] == len(orphans) and block_files(local_home) - stored == orphans
    assert {loc.split("+")[0] for loc in dry["deleted_locators"]} == orphans
    old = time.time() - 3 * 3600
    for name in orphans:
        os.utime(local_home / "keep" / name[:3] / name, (old, old))
    assert gc("--grace", "4h")["deleted"]["blocks"] == 0
    done = gc("--grace", "2h")
    assert done["deleted"]["blocks"] == len(orphans)
    assert block_files(local_home) == stored
    verified = run_keeptar("inspect", "--verify", "--json", uuid)
    assert verified.returncode == 0, verified.stderr
    text = run_keeptar("gc", "--grace", "0")
    assert text.stdout.decode().startswith("deleted 0 blocks (0 bytes)\nkept 1 block that")


def test_gc_on_arvados_points_at_keep_balance(emulator: Any) -> None:
    result = keeptar_on(emulator, "gc", "--grace", "0")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1 and b"keep-balance" in result.stderr


def test_gc_refuses_a_bad_grace(local_home: Path) -> None:
    for bad in ("-1", "2 weeks", "1.5h", "x"):
        result = run_keeptar("gc", "--grace", bad)
        assert result.returncode == 2 and b"bad duration" in result.stderr, bad


def test_gc_never_deletes_a_block_a_running_load_has_not_registered(
    local_home: Path, tmp_path: Path
) -> None:
    """Two real processes: a load with one 64 MiB block stored and the rest of its input
    still to come, and `keeptar gc --grace 0` started meanwhile."""
    from test_load import big_layer_archive

    data = big_layer_archive(tmp_path / "big.tar", 100).read_bytes()
    load = subprocess.Popen(
        [sys.executable, "-m", "keeptar", "load", "--json", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert load.stdin is not None
    load.stdin.write(data[: 80 << 20])
    load.stdin.flush()
    deadline = time.monotonic() + 60
    while not block_files(local_home) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first block is on disk, unregistered
    (first,) = block_files(local_home)
    collector = subprocess.Popen(
        [sys.executable, "-m", "keeptar", "gc", "--json", "--grace", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)
    assert collector.poll() is None, "gc did not wait for the running load"
    assert first in block_files(local_home)
    out, err = load.communicate(data[80 << 20 :], timeout=120)
    assert load.returncode == 0, err
    report_out, report_err = collector.communicate(timeout=120)
    assert collector.returncode == 0, report_err
    report = json.loads(report_out)
    assert report["deleted"]["blocks"] == 0 and report["kept_referenced"]["blocks"] == 2
    verified = run_keeptar("inspect", "--verify", "--json", json.loads(out)["uuid"])
    assert verified.returncode == 0, verified.stderr


# ---- issue 9 §10: resuming a file load -----------------------------------------------------


def block_identities(home: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in (home / "keep").glob("???/*"):
        if path.parent.name != "tmp":
            info = path.stat()
            found[path.name] = (info.st_ino, info.st_mtime_ns)
    return found


def test_a_rerun_stores_only_the_blocks_an_interrupted_load_did_not(
    local_home: Path, tmp_path: Path
) -> None:
    from test_load import big_layer_archive

    archive = big_layer_archive(tmp_path / "big.tar", 250)  # 4 blocks
    blocks = -(-archive.stat().st_size // (64 << 20))
    load = subprocess.Popen(
        [sys.executable, "-m", "keeptar", "load", "--no-progress", str(archive)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not block_identities(local_home) and time.monotonic() < deadline:
        time.sleep(0.005)
    load.kill()  # kill -9 mid-upload
    load.wait()
    before = block_identities(local_home)
    assert before, "no block was stored before the kill"
    assert json.loads(run_keeptar("images", "--all", "--json").stdout) == []

    rerun = run_keeptar("load", "--json", str(archive))
    assert rerun.returncode == 0, rerun.stderr
    after = block_identities(local_home)
    assert len(after) == blocks
    rewritten = [name for name in before if after[name] != before[name]]
    assert rewritten == [], "blocks the first run stored were stored again"
    verified = run_keeptar("inspect", "--verify", "--json", json.loads(rerun.stdout)["uuid"])
    assert verified.returncode == 0, verified.stderr

    forced = run_keeptar("load", "--force", str(archive))  # rewrites all: repairs in place
    assert forced.returncode == 0, forced.stderr
    again = block_identities(local_home)
    assert all(again[name] != after[name] for name in after)


def keep_requests(emulator: Any, method: str) -> int:
    return sum(1 for m, path in emulator.requests if m == method and path == "/keep/")


def test_on_arvados_a_rerun_puts_every_block_again(emulator: Any, tmp_path: Path) -> None:
    """keepstore answers a HEAD only for a signed locator, and only a PUT returns one:
    with no cache on disk, the re-run PUTs every block (and never sends an unsigned HEAD,
    which keepstore would refuse)."""
    from test_load import big_layer_archive

    archive = big_layer_archive(tmp_path / "big-arv.tar", 70)  # 2 blocks
    puts, heads = keep_requests(emulator, "PUT"), keep_requests(emulator, "HEAD")
    load = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keeptar",
            "load",
            "--no-progress",
            "--tag",
            "kt/resume:1",
            str(archive),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **emulator.env(emulator.alice)},
    )
    deadline = time.monotonic() + 120
    while keep_requests(emulator, "PUT") == puts and time.monotonic() < deadline:
        time.sleep(0.005)
    load.kill()
    load.wait()
    first = keep_requests(emulator, "PUT") - puts
    rerun = keeptar_on(emulator, "load", "--json", "--tag", "kt/resume:1", str(archive))
    assert rerun.returncode == 0, rerun.stderr
    assert first >= 1
    # both blocks again, each to as many keepstores as the replicas asked for
    assert keep_requests(emulator, "PUT") - puts - first == 2 * emulator.default_replication
    assert keep_requests(emulator, "HEAD") == heads


# ---- issue 9 §10: arv-keepdocker habits ----------------------------------------------------

PROGRESS_LINE = re.compile(r"(\S+) (\d+): (\d+) written (-?\d+) total")


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_batch_progress_lines_in_arv_puts_format(
    local_home: Path, tmp_path: Path, source: str
) -> None:
    from test_load import big_layer_archive

    archive = big_layer_archive(tmp_path / "big.tar", 100)
    size = archive.stat().st_size
    with open(archive, "rb") as stdin:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keeptar",
                "load",
                "--batch-progress",
                str(archive) if source == "file" else "-",
            ],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    lines = err.decode().splitlines()
    assert lines, "no progress lines"
    parsed = [PROGRESS_LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    assert {(m[1], int(m[2])) for m in parsed if m} == {("keeptar", process.pid)}
    written = [int(m[3]) for m in parsed if m]
    assert written == sorted(written) and written[-1] == size
    assert {int(m[4]) for m in parsed if m} == {size if source == "file" else -1}
    assert out.decode().startswith("local-4zz18-")


def test_silent_prints_only_the_result(local_home: Path, tmp_path: Path) -> None:
    from test_names import with_repo_tags

    archive = with_repo_tags(tmp_path, ["kt/good:1", "Kt/Upper:1"])  # one tag warns
    warned = run_keeptar("load", str(archive))
    assert warned.returncode == 0 and b"keeptar: warning: " in warned.stderr
    result = run_keeptar("load", "--silent", "--progress", "--force", str(archive))
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout.decode().startswith("local-4zz18-")
    both = run_keeptar("load", "--progress", "--batch-progress", str(APP))
    assert both.returncode == 2 and b"cannot be used together" in both.stderr


def test_retries_overrides_keeptar_retries(emulator: Any) -> None:
    fault = emulator.inject("GET", "/arvados/v1/users/current", status=503, times=2)
    try:
        failed = keeptar_on(emulator, "load", "--retries", "0", str(APP), KEEPTAR_RETRIES="5")
        assert failed.returncode == 5, failed.stderr
        assert b"503" in failed.stderr
        fault.times = 2
        done = keeptar_on(emulator, "load", "--retries", "3", str(APP), KEEPTAR_RETRIES="0")
        assert done.returncode == 0, done.stderr
    finally:
        fault.times = 0
    assert keeptar_on(emulator, "load", "--retries", "-1", str(APP)).returncode == 2


@pytest.mark.parametrize("command", ["load", "images", "inspect", "info", "gc"])
def test_every_command_takes_version(command: str) -> None:
    from keeptar import __version__

    result = run_keeptar(command, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"keeptar {__version__}\n"


def test_gc_waits_for_a_writer_that_only_looked_for_a_block(local_home: Path) -> None:
    """A resumed load that found a block stored relies on it from that moment on."""
    from keeptar.backends.embedded import EmbeddedBackend

    earlier = EmbeddedBackend(local_home)
    locator = earlier.put_block(b"left by an interrupted load")
    earlier.close()
    looking = EmbeddedBackend(local_home)
    assert looking.has_block(locator)
    blocked = run_keeptar("gc", "--grace", "0", "--wait", "1")
    assert blocked.returncode == 7, blocked.stderr
    assert b"another keeptar process is writing" in blocked.stderr
    assert looking.has_block(locator)
    looking.close()
    assert gc("--grace", "0")["deleted_locators"] == [locator]
    assert not EmbeddedBackend(local_home, read_only=True).has_block(locator)


def test_a_fresh_file_stops_asking_after_a_few_missing_blocks(
    local_home: Path, tmp_path: Path
) -> None:
    """Asking first costs the embedded store its overlap of hashing and writing, so a
    load whose first blocks are all missing is taken for a fresh one."""
    from keeptar.backends.embedded import EmbeddedBackend
    from keeptar.keep.blocks import FRESH_AFTER_MISSES, store_file

    path = tmp_path / "five-blocks"
    path.write_bytes(hashlib.shake_256(b"fresh").digest((4 << 26) + 1000))  # 5 blocks
    store = EmbeddedBackend(local_home)
    asked: list[str] = []

    def has_block(locator: str) -> bool:
        asked.append(locator)
        return store.has_block(locator)

    with open(path, "rb") as f:
        first = store_file(store.put_block, f.fileno(), path.stat().st_size, is_stored=has_block)
    assert len(first.locators) == 5
    assert FRESH_AFTER_MISSES <= len(asked) <= FRESH_AFTER_MISSES + 1  # (two workers)
    asked.clear()
    with open(path, "rb") as f:
        again = store_file(store.put_block, f.fileno(), path.stat().st_size, is_stored=has_block)
    assert again == first and len(asked) == 5  # every block found: asked about each
    store.close()
