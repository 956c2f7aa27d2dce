"""Every backend behaviour, on the embedded store and on Arvados (over the emulator)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from keeptar.backends import open_backend
from keeptar.errors import BackendError, ConflictError, NotFoundError, UsageError
from keeptar.keep import Locator, parse_manifest, portable_data_hash, single_file_manifest
from keeptar.keep.blocks import BlockWriter, KeepFileReader, read_file_range

MiB = 1 << 20


def random_bytes(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(b"keeptar-%d" % seed).digest(size)


def store(backend: Any, data: bytes, name: str, *, block_size: int = 1 << 26) -> dict[str, Any]:
    with BlockWriter(backend.put_block, block_size=block_size) as writer:
        for start in range(0, len(data), 300_000):
            writer.write(data[start : start + 300_000])
        stored = writer.finish()
    manifest = single_file_manifest(name, stored.locators, stored.size)
    record: dict[str, Any] = backend.create_collection(
        manifest_text=manifest,
        name=f"test {name} {os.urandom(4).hex()}",
        owner_uuid=backend.current_user().uuid,
        properties={"k": "v"},
    )
    return record


def home_project(backend: Any) -> str:
    uuid: str = backend.current_user().uuid
    return uuid


def test_write_and_read_back(backend: Any) -> None:
    data = random_bytes(5 * MiB + 123)
    record = store(backend, data, "sha256:" + "ab" * 32 + ".tar", block_size=2 * MiB)
    (item,) = parse_manifest(backend.get_collection(record["uuid"])["manifest_text"])
    assert item.path == "sha256:" + "ab" * 32 + ".tar"
    assert [Locator.parse(s.locator).size for s in item.segments] == [2 * MiB, 2 * MiB, MiB + 123]
    assert (
        read_file_range(
            backend.get_block,
            backend.get_collection(record["uuid"])["manifest_text"],
            item.path,
            0,
            len(data) + 10,
        )
        == data
    )
    assert record["portable_data_hash"] == portable_data_hash(record["manifest_text"])


def test_range_reads_fetch_only_overlapping_blocks(backend: Any) -> None:
    data = random_bytes(6 * MiB, seed=1)
    record = store(backend, data, "layer.tar", block_size=MiB)
    manifest = backend.get_collection(record["uuid"])["manifest_text"]
    fetched: list[str] = []
    original = backend.get_block

    def counting(locator: str) -> bytes:
        fetched.append(Locator.parse(locator).md5)
        return original(locator)

    backend.get_block = counting
    try:
        piece = read_file_range(backend.get_block, manifest, "layer.tar", 2 * MiB + 10, MiB)
    finally:
        backend.get_block = original
    assert piece == data[2 * MiB + 10 : 3 * MiB + 10]
    expected = {hashlib.md5(data[i * MiB : (i + 1) * MiB]).hexdigest() for i in (2, 3)}
    assert set(fetched) == expected and len(fetched) == 2


def test_file_reader_reads_segments_in_file_order(backend: Any) -> None:
    """read, readinto, readall and seek over segments that reuse blocks out of order
    give the bytes the manifest names (computed here by slicing the blocks' data)."""
    blocks = [random_bytes(MiB + 7, seed=20), random_bytes(300_001, seed=21)]
    locators = [backend.put_block(memoryview(data)) for data in blocks]
    starts = [0, len(blocks[0])]
    spans = [(1, 5, 200_000), (0, MiB - 3, 10), (0, 0, MiB + 7), (1, 0, 300_001), (0, 11, 1)]
    expected = b"".join(blocks[b][off : off + n] for b, off, n in spans)
    tokens = " ".join(f"{starts[b] + off}:{n}:f.tar" for b, off, n in spans)
    (item,) = parse_manifest(f". {' '.join(locators)} {tokens}\n")
    reader = KeepFileReader(backend.get_block, item)
    got = bytearray()
    while piece := reader.read(65_537):
        got += piece
    assert got == expected
    reader.seek(0)
    assert reader.readall() == expected
    reader.seek(MiB // 2)
    assert reader.read() == expected[MiB // 2 :]
    reader.seek(-3, io.SEEK_END)
    buffer = bytearray(10)
    assert reader.readinto(buffer) == 2  # short: the segment ends (a 1-byte one follows)
    assert reader.readinto(memoryview(buffer)[2:]) == 1 and buffer[:3] == expected[-3:]
    assert reader.read(5) == b"" and reader.readinto(buffer) == 0
    reader.seek(200_000)  # the 10 bytes at the end of block 0, then block 0 again
    assert reader.read(10**9) == expected[200_000:200_010]  # short: the segment ends
    assert reader.read(4) == expected[200_010:200_014]


def test_get_by_pdh_and_list_with_filters_and_select(backend: Any) -> None:
    data = random_bytes(1000, seed=2)
    record = store(backend, data, "f.tar")
    by_pdh = backend.get_collection(record["portable_data_hash"])
    assert by_pdh["portable_data_hash"] == record["portable_data_hash"]
    listed = list(
        backend.list_collections(
            [["uuid", "in", [record["uuid"], "zzzzz-4zz18-doesnotexist0000"]]],
            select=["uuid", "owner_uuid", "properties"],
        )
    )
    assert listed == [
        {"uuid": record["uuid"], "owner_uuid": record["owner_uuid"], "properties": {"k": "v"}}
    ]
    like = list(backend.list_collections([["name", "like", record["name"][:12] + "%"]]))
    assert record["uuid"] in {c["uuid"] for c in like}


def test_get_by_pdh_is_the_newest_collection_with_its_manifest(backend: Any) -> None:
    """A PDH names the newest readable collection holding it, manifest included
    (the server's collection index omits manifest_text unless it is selected)."""
    data = random_bytes(1000, seed=5)
    older = store(backend, data, "same.tar")
    time.sleep(0.01)
    newer = backend.create_collection(
        manifest_text=older["manifest_text"],
        name=f"test same.tar {os.urandom(4).hex()}",
        owner_uuid=backend.current_user().uuid,
        properties={},
    )
    assert newer["portable_data_hash"] == older["portable_data_hash"]
    found = backend.get_collection(older["portable_data_hash"])
    assert found["uuid"] == newer["uuid"]
    (item,) = parse_manifest(found["manifest_text"])
    assert read_file_range(backend.get_block, found["manifest_text"], item.path, 0, 2000) == data
    (listed,) = backend.list_collections([["uuid", "=", newer["uuid"]]])  # every field
    assert portable_data_hash(listed["manifest_text"]) == newer["portable_data_hash"]

def test_update_properties_and_delete(backend: Any) -> None:
    record = store(backend, random_bytes(10, seed=3), "p.tar")
    updated = backend.update_collection(record["uuid"], properties={"docker-image-repo-tag": "a:b"})
    assert updated["properties"] == {"docker-image-repo-tag": "a:b"}
    backend.delete_collection(record["uuid"])
    with pytest.raises(NotFoundError):
        backend.get_collection(record["uuid"])


def test_ensure_unique_name(backend: Any) -> None:
    data = random_bytes(10, seed=4)
    with BlockWriter(backend.put_block) as writer:
        writer.write(data)
        stored = writer.finish()
    manifest = single_file_manifest("x.tar", stored.locators, stored.size)
    owner = home_project(backend)
    name = f"unique {os.urandom(4).hex()}"
    first = backend.create_collection(
        manifest_text=manifest, name=name, owner_uuid=owner, properties={}
    )
    with pytest.raises(ConflictError):
        backend.create_collection(
            manifest_text=manifest, name=name, owner_uuid=owner, properties={}
        )
    second = backend.create_collection(
        manifest_text=manifest, name=name, owner_uuid=owner, properties={}, ensure_unique_name=True
    )
    assert first["name"] == name
    assert second["name"] == f"{name} ({second['uuid'][-15:]})"


def test_links_and_filter_operators(backend: Any) -> None:
    record = store(backend, random_bytes(10, seed=5), "l.tar")
    tag = f"repo{os.urandom(3).hex()}/Image"
    made = [
        backend.create_link(
            link_class="docker_image_repo+tag",
            name=f"{tag}:v1",
            head_uuid=record["uuid"],
            properties={"image_timestamp": "2024-01-01T00:00:00Z"},
        ),
        backend.create_link(
            link_class="docker_image_hash",
            name="sha256:" + "cd" * 32,
            head_uuid=record["uuid"],
            properties={},
        ),
    ]

    def names(filters: list[list[Any]]) -> set[str]:
        return {
            link["name"]
            for link in backend.list_links(filters)
            if link["head_uuid"] == record["uuid"]
        }

    assert names([["link_class", "=", "docker_image_repo+tag"]]) == {f"{tag}:v1"}
    assert names([["link_class", "in", ["docker_image_hash", "docker_image_repo+tag"]]]) == {
        f"{tag}:v1",
        "sha256:" + "cd" * 32,
    }
    assert names([["name", "like", f"{tag}:%"]]) == {f"{tag}:v1"}
    assert names([["name", "like", f"{tag.lower()}:%"]]) == set()  # like is case-sensitive
    assert names([["name", "ilike", f"{tag.lower()}:%"]]) == {f"{tag}:v1"}
    assert names([["name", "like", "sha256:cdcd%"]]) == {"sha256:" + "cd" * 32}  # prefix match
    assert names([["head_uuid", "=", record["uuid"]], ["name", "!=", f"{tag}:v1"]]) == {
        "sha256:" + "cd" * 32
    }
    listed = [link for link in backend.list_links([["uuid", "=", made[0]["uuid"]]])]
    assert listed[0]["properties"] == {"image_timestamp": "2024-01-01T00:00:00Z"}
    backend.delete_link(made[0]["uuid"])
    assert names([["link_class", "=", "docker_image_repo+tag"]]) == set()


def test_user_projects_and_facts(backend: Any) -> None:
    user = backend.current_user()
    assert user.uuid.split("-")[1] == "tpzed"
    assert backend.get_project(user.uuid)["can_write"] is True
    missing = user.uuid.split("-")[0] + "-j7d0g-000000000000000"
    with pytest.raises(NotFoundError):
        backend.get_project(missing)
    facts = backend.server_facts()
    assert facts.docker_image_formats == ("v2",)
    assert len(facts.uuid_prefix) == 5


def test_missing_collection(backend: Any) -> None:
    prefix = backend.server_facts().uuid_prefix
    with pytest.raises(NotFoundError):
        backend.get_collection(f"{prefix}-4zz18-000000000000000")
    with pytest.raises(NotFoundError):
        backend.get_collection("0" * 32 + "+0")


# ---- the embedded store ------------------------------------------------------------------


def test_embedded_pdh_is_byte_identical_to_the_sdk(local_home: Path, tmp_path: Path) -> None:
    import arvados
    import arvados.collection

    from keeptar.backends.embedded import EmbeddedBackend

    data = random_bytes(70 * MiB, seed=6)  # two blocks
    name = "sha256:" + "ef" * 32 + " with space\\.tar"
    sdk_store = tmp_path / "sdk-keep"
    sdk_store.mkdir()
    collection = arvados.collection.Collection(
        keep_client=arvados.KeepClient(local_store=str(sdk_store)), replication_desired=1
    )
    with collection.open(name, "wb") as out:
        out.write(data)
    backend = EmbeddedBackend(local_home)
    record = store(backend, data, name)
    assert record["manifest_text"] == collection.manifest_text()
    assert record["portable_data_hash"] == collection.portable_data_hash()
    # Blocks land where keepstore's unix volumes (and KEEP_LOCAL_STORE) put them.
    for item in parse_manifest(record["manifest_text"]):
        for segment in item.segments:
            md5 = Locator.parse(segment.locator).md5
            assert (local_home / "keep" / md5[:3] / md5).read_bytes() == (
                sdk_store / md5
            ).read_bytes()


def test_embedded_refuses_manifests_naming_missing_blocks(local_home: Path) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(local_home)
    with pytest.raises(NotFoundError):
        backend.create_collection(
            manifest_text=". " + "1" * 32 + "+5 0:5:x\n",
            name="n",
            owner_uuid=backend.current_user().uuid,
            properties={},
        )


@pytest.mark.parametrize(
    "kind, size",
    [
        ("aligned mmap", 1 << 20),
        ("aligned mmap, unaligned tail", (1 << 20) + 1234),
        ("aligned mmap, shorter than a page", 100),
        ("unaligned bytes", (1 << 20) + 7),
        ("empty", 0),
    ],
)
def test_embedded_block_files_hold_exactly_the_bytes(
    local_home: Path, kind: str, size: int
) -> None:
    """Direct I/O where the buffer allows it, the page cache otherwise: same bytes."""
    import mmap

    from keeptar.backends.embedded import EmbeddedBackend

    payload = hashlib.shake_256(kind.encode()).digest(size)
    data: Any
    if kind.startswith("aligned"):
        data = mmap.mmap(-1, max(size, 1))
        data[:size] = payload
        view = memoryview(data)[:size]
    else:
        view = memoryview(payload)
    backend = EmbeddedBackend(local_home)
    locator = backend.put_block(view)
    md5 = hashlib.md5(payload).hexdigest()
    assert locator == f"{md5}+{size}"
    assert (local_home / "keep" / md5[:3] / md5).read_bytes() == payload
    assert backend.get_block(locator) == payload
    assert not list((local_home / "keep" / "tmp").iterdir()), "temporary file left behind"


def test_embedded_block_write_failure_leaves_nothing(local_home: Path) -> None:
    import threading

    from keeptar.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(local_home)
    # Occupy the temporary name with a directory, so creating the file fails.
    blocker = local_home / "keep" / "tmp" / f"{os.getpid()}.{threading.get_ident()}"
    blocker.mkdir(parents=True)
    with pytest.raises(BackendError, match="writing block"):
        backend.put_block(b"some block")
    blocker.rmdir()
    assert [p.name for p in (local_home / "keep").iterdir()] == ["tmp"]
    assert not list((local_home / "keep" / "tmp").iterdir())
    assert backend.put_block(b"some block").startswith(hashlib.md5(b"some block").hexdigest())


def test_embedded_storing_a_block_again_repairs_a_damaged_copy(local_home: Path) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(local_home)
    data = hashlib.shake_256(b"repair").digest(100_000)
    locator = backend.put_block(data)
    stored = local_home / "keep" / locator[:3] / locator[:32]
    damaged = bytearray(data)
    damaged[5000] ^= 0xFF  # bit rot: same size, wrong bytes
    stored.write_bytes(damaged)
    with pytest.raises(BackendError, match="corrupt"):
        backend.get_block(locator)
    assert backend.put_block(data) == locator
    assert backend.get_block(locator) == data


def test_embedded_removes_blocks_half_written_by_dead_processes(local_home: Path) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = local_home / "keep" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / f"{dead.pid}.1").write_bytes(b"half a block from a process killed mid-write")
    (tmp / f"{os.getpid()}.999").write_bytes(b"a live process's block in progress")
    EmbeddedBackend(local_home).put_block(b"x")
    assert sorted(p.name for p in tmp.iterdir()) == [f"{os.getpid()}.999"]


def test_embedded_image_formats_are_configurable(local_home: Path) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    local_home.mkdir(parents=True)
    (local_home / "config.json").write_text('{"docker_image_formats": ["v1", "v2"]}')
    assert EmbeddedBackend(local_home).server_facts().docker_image_formats == ("v1", "v2")


WRITER = r"""
import sys
import time
from keeptar.backends.embedded import EmbeddedBackend
from keeptar.keep.blocks import BlockWriter
from keeptar.keep import single_file_manifest
backend = EmbeddedBackend(sys.argv[1])
worker = sys.argv[2]
for n in range(25):
    data = (f"{worker}-{n}-".encode() * 5000)
    with BlockWriter(backend.put_block) as w:
        w.write(data)
        s = w.finish()
    c = backend.create_collection(manifest_text=single_file_manifest("f", s.locators, s.size),
                                  name=f"w{worker}-{n}", owner_uuid=backend.current_user().uuid,
                                  properties={})
    backend.create_link(link_class="docker_image_hash", name=f"h{worker}-{n}",
                        head_uuid=c["uuid"], properties={})
"""


def test_concurrent_writers_on_the_embedded_store(local_home: Path) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    EmbeddedBackend(local_home)  # create the schema once
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(local_home), str(w)]) for w in range(4)
    ]
    assert [p.wait(timeout=240) for p in procs] == [0, 0, 0, 0]
    backend = EmbeddedBackend(local_home)
    collections = list(backend.list_collections([]))
    links = list(backend.list_links([["link_class", "=", "docker_image_hash"]]))
    assert len(collections) == 100 and len(links) == 100
    assert {link["head_uuid"] for link in links} == {c["uuid"] for c in collections}
    db = backend._db()
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for record in collections:  # every block each process wrote is whole
        (item,) = parse_manifest(record["manifest_text"])
        worker, n = record["name"][1:].split("-")
        assert read_file_range(backend.get_block, record["manifest_text"], "f", 0, item.size) == (
            f"{worker}-{n}-".encode() * 5000
        )


# ---- the Arvados backend --------------------------------------------------------------


def test_keepstore_failures_are_retried(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    backend = ArvadosBackend()
    data = random_bytes(3 * MiB, seed=7)
    emulator.inject("PUT", "/keep/", status=503, times=2)
    emulator.inject("PUT", "/keep/", drop=True, times=1)
    record = store(backend, data, "retried.tar", block_size=MiB)
    assert (
        read_file_range(
            backend.get_block,
            backend.get_collection(record["uuid"])["manifest_text"],
            "retried.tar",
            0,
            len(data),
        )
        == data
    )


def test_keepstore_that_keeps_failing_is_a_backend_error(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    backend = ArvadosBackend(num_retries=1)
    fault = emulator.inject("PUT", "/keep/", status=500, times=50)
    try:
        with pytest.raises(BackendError, match="storing a block"):
            store(backend, random_bytes(100, seed=8), "never.tar")
    finally:
        fault.times = 0


def test_api_errors_are_retried(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    backend = ArvadosBackend()
    emulator.inject("POST", "/arvados/v1/links", status=502, times=2)
    record = store(backend, random_bytes(10, seed=9), "r.tar")
    link = backend.create_link(
        link_class="docker_image_hash", name="x", head_uuid=record["uuid"], properties={}
    )
    assert link["head_uuid"] == record["uuid"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_that_is_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = "v2/zzzzz-gj3su-secretsecret000/" + "s3cr3t" * 8
    monkeypatch.setenv("ARVADOS_API_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("ARVADOS_API_TOKEN", token)
    monkeypatch.setenv("ARVADOS_API_HOST_INSECURE", "1")
    monkeypatch.setenv("KEEPTAR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEEPTAR_RETRIES", "1")
    with pytest.raises(BackendError, match="cannot reach the Arvados API server") as caught:
        open_backend()
    assert token not in str(caught.value) and "s3cr3t" not in str(caught.value)
    result = subprocess.run(
        [sys.executable, "-m", "keeptar", "info"],
        capture_output=True,
        env={**os.environ},
        timeout=120,
    )
    assert result.returncode == 5
    assert b"Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert b"s3cr3t" not in result.stderr + result.stdout


def test_tokens_never_appear_in_output(emulator: Any, tmp_path: Path) -> None:
    env = {**os.environ, **emulator.env(emulator.alice), "KEEPTAR_HOME": str(tmp_path)}
    outputs = []
    for args in (["info"], ["info", "--json"], ["info", "--backend", "arvados"]):
        result = subprocess.run(
            [sys.executable, "-m", "keeptar", *args], capture_output=True, env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    assert b"zzzzz-tpzed-alice0000000000" in outputs[0]
    # A 403 from the server: the error names the problem, never the token.
    bad = {**env, "ARVADOS_API_TOKEN": "not-a-valid-token-" + "q" * 20}
    result = subprocess.run(
        [sys.executable, "-m", "keeptar", "info"], capture_output=True, env=bad, timeout=120
    )
    assert result.returncode == 5
    outputs.append(result.stdout + result.stderr)
    for output in outputs:
        assert emulator.alice.token.encode() not in output
        assert b"q" * 20 not in output


def test_backend_selection(
    local_home: Path, monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    assert open_backend().kind == "local"
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    assert open_backend().kind == "arvados"
    assert open_backend("local").kind == "local"
    monkeypatch.setenv("KEEPTAR_BACKEND", "local")
    assert open_backend().kind == "local"
    with pytest.raises(UsageError, match="unknown backend"):
        open_backend("s3")


def test_backend_selection_from_the_sdk_settings_file(
    local_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = tmp_path / "xdg-config" / "arvados" / "settings.conf"
    settings.parent.mkdir(parents=True)
    settings.write_text("".join(f"{k}={v}\n" for k, v in emulator.env().items()))
    monkeypatch.setenv("HOME", str(tmp_path))
    backend = open_backend()
    assert backend.kind == "arvados"
    assert backend.current_user().uuid == emulator.admin.uuid


@pytest.mark.parametrize("detach", [False, True], ids=["buffers", "copies"])
def test_store_file_cuts_64_mib_blocks_in_order(tmp_path: Path, detach: bool) -> None:
    from keeptar.keep import BLOCK_SIZE
    from keeptar.keep.blocks import store_file

    size = 2 * BLOCK_SIZE + 12345
    path = tmp_path / "f"
    path.write_bytes(hashlib.shake_256(b"store_file").digest(size))
    stored: dict[str, bytes] = {}

    def put(view: memoryview, *, md5: str | None = None) -> str:
        data = bytes(view)
        locator = f"{hashlib.md5(data).hexdigest()}+{len(data)}"
        stored[locator] = data
        return locator

    with open(path, "rb") as f:
        result = store_file(put, f.fileno(), size, detach=detach)
    assert result.size == size
    assert [int(loc.split("+")[1]) for loc in result.locators] == [BLOCK_SIZE, BLOCK_SIZE, 12345]
    assert b"".join(stored[loc] for loc in result.locators) == path.read_bytes()


@pytest.mark.parametrize("detach", [False, True], ids=["buffers", "copies"])
def test_store_file_reports_a_file_that_shrank(tmp_path: Path, detach: bool) -> None:
    from keeptar.errors import ArchiveError
    from keeptar.keep.blocks import store_file

    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    with open(path, "rb") as f, pytest.raises(ArchiveError, match=r"shrank .*at byte 1000\)"):
        store_file(lambda view, *, md5=None: "x", f.fileno(), 5000, detach=detach)
