"""``keeptar migrate19``: a cluster's v1 images migrated to v2, as arv-migrate-docker19 did.

Each test gets a fresh store holding the v1 fixtures, loaded by ``keeptar load
--force-image-format`` into a cluster that accepts v1: the embedded store (its
config.json) and an emulated Arvados cluster of its own (loaded as Alice, migrated as the
admin).  Expected v2 image IDs come from the host dockerd 20.10's own legacy ``docker
load``; the server-side image lookup of the emulator (``container_requests`` create) checks
that a v2-only cluster then runs the old names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_migrate_container import (  # noqa: F401 - the session fixture is used here
    TAGS,
    engine_image,
    legacy_load_id,
)

from conftest import fixture_path, run_keeptar

APP = "docker-v1-app.tar"
MOBY = "v1-moby-emptylayer.tar"
LINK_CLASS = "docker_image_migration"
LINK_NAME = "migrate_1.9_1.10"


@pytest.fixture(scope="session")
def docker_ids(dockerd: str) -> dict[str, str]:
    """Each v1 fixture's image ID after the host dockerd 20.10's legacy load."""
    return {name: legacy_load_id(dockerd, name) for name in TAGS}


@dataclass
class Store:
    """A fresh store holding v1 images: the embedded one, or an emulated cluster."""

    kind: str
    home: Path
    emu: Any = None
    old: dict[str, dict[str, Any]] = field(default_factory=dict)

    def env(self, admin: bool = True) -> dict[str, str]:
        if self.emu is None:
            return {"KEEPTAR_HOME": str(self.home)}
        return dict(self.emu.env(None if admin else self.emu.alice))

    def run(self, *args: str, admin: bool = True, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return run_keeptar(*args, env=self.env(admin), **kw)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "keeptar", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.env()},
        )

    def records(self, table: str) -> list[dict[str, Any]]:
        """Every live record of *table*, read from the store itself (not through keeptar)."""
        if self.emu is not None:
            with self.emu.lock:
                rows = list(self.emu.tables[table].values())
            return [r for r in rows if not r.get("is_trashed")]
        import sqlite3

        db = sqlite3.connect(self.home / "catalog.sqlite3")
        db.row_factory = sqlite3.Row
        try:
            rows = [dict(r) for r in db.execute(f"SELECT * FROM {table}")]
        finally:
            db.close()
        for row in rows:
            if isinstance(row.get("properties"), str):
                row["properties"] = json.loads(row["properties"])
        return rows

    @property
    def system_user(self) -> str:
        return "local-tpzed-000000000000000" if self.emu is None else self.emu.system_user


def _load(store: Store, name: str) -> dict[str, Any]:
    done = store.run("load", "--json", "--force-image-format", str(fixture_path(name)), admin=False)
    assert done.returncode == 0, done.stderr.decode()
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


@pytest.fixture(params=["local", "arvados"])
def store(request: pytest.FixtureRequest, local_home: Path) -> Iterator[Store]:
    if request.param == "local":
        local_home.mkdir(parents=True, exist_ok=True)
        (local_home / "config.json").write_text('{"docker_image_formats": ["v1", "v2"]}')
        found = Store("local", local_home)
        found.old = {name: _load(found, name) for name in TAGS}
        yield found
        return
    from arvados_emulator import Emulator

    with Emulator(docker_image_formats=["v1", "v2"]) as emu:
        found = Store("arvados", local_home, emu)
        found.old = {name: _load(found, name) for name in TAGS}
        yield found


def _migrate(store: Store, *args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    done = store.run("migrate19", "--engine", "native", "--json", *args)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    return lines[:-1], lines[-1]


def _check_migrated(store: Store, docker_ids: dict[str, str]) -> None:
    """Exactly one v2 collection, its links and one migration link per old image."""
    collections = store.records("collections")
    links = store.records("links")
    for name, old in store.old.items():
        expected = docker_ids[name]
        old_record = next(c for c in collections if c["uuid"] == old["uuid"])
        hashes = [
            link
            for link in links
            if link["link_class"] == "docker_image_hash" and link["name"] == expected
        ]
        assert len(hashes) == 1, hashes
        new = next(c for c in collections if c["uuid"] == hashes[0]["head_uuid"])
        # In the old image's project, one collection of that PDH, one link of each.
        same = [
            c
            for c in collections
            if c["portable_data_hash"] == new["portable_data_hash"]
            and c["owner_uuid"] == old_record["owner_uuid"]
        ]
        assert len(same) == 1
        assert new["owner_uuid"] == old_record["owner_uuid"]
        # One file, named as arv-keepdocker names a v2 image's (the server's v2 pattern).
        assert {
            token.split(":", 2)[2].replace("\\072", ":")
            for token in new["manifest_text"].split()
            if ":" in token
        } == {f"{expected}.tar"}
        assert hashes[0]["owner_uuid"] == old_record["owner_uuid"]
        old_hash = next(
            link
            for link in links
            if link["link_class"] == "docker_image_hash" and link["head_uuid"] == old["uuid"]
        )
        assert (
            hashes[0]["properties"]["image_timestamp"] == old_hash["properties"]["image_timestamp"]
        )
        names = [
            link["name"]
            for link in links
            if link["link_class"] == "docker_image_repo+tag" and link["head_uuid"] == new["uuid"]
        ]
        assert names == [TAGS[name]]
        migrations = [
            link
            for link in links
            if link["link_class"] == LINK_CLASS and link["tail_uuid"] == old["portable_data_hash"]
        ]
        assert len(migrations) == 1, migrations
        assert migrations[0]["name"] == LINK_NAME
        assert migrations[0]["owner_uuid"] == store.system_user
        assert migrations[0]["head_uuid"] == new["portable_data_hash"]


def test_migrates_every_v1_image_to_dockers_ids(store: Store, docker_ids: dict[str, str]) -> None:
    unmigrated = store.run("migrate19", "--print-unmigrated")
    assert unmigrated.returncode == 0, unmigrated.stderr
    old_pdhs = {old["portable_data_hash"] for old in store.old.values()}
    assert set(unmigrated.stdout.decode().split()) == old_pdhs
    dry = store.run("migrate19", "--engine", "native", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["to_migrate"] == 2
    before = len(store.records("collections"))
    assert before == 2  # --dry-run made nothing

    outcomes, summary = _migrate(store)
    assert {o["old_pdh"]: o["image_id"] for o in outcomes} == {
        store.old[name]["portable_data_hash"]: docker_ids[name] for name in TAGS
    }
    assert all(o["ok"] for o in outcomes)
    assert (summary["migrated"], summary["failed"]) == (2, 0)
    _check_migrated(store, docker_ids)

    # Done: nothing left, and a re-run creates nothing.
    counts = (len(store.records("collections")), len(store.records("links")))
    again = store.run("migrate19", "--print-unmigrated")
    assert again.returncode == 0 and again.stdout == b""
    outcomes, summary = _migrate(store)
    assert outcomes == [] and summary["already_migrated"] == 2
    assert (len(store.records("collections")), len(store.records("links"))) == counts


def test_an_image_without_a_hash_link_is_old_too(store: Store, docker_ids: dict[str, str]) -> None:
    """Listed as <unknown> (a name link, no hash link): migrated like the others."""
    old = store.old[APP]
    hash_links = [
        link
        for link in store.records("links")
        if link["link_class"] == "docker_image_hash" and link["head_uuid"] == old["uuid"]
    ]
    assert len(hash_links) == 1
    if store.emu is not None:
        store.emu.api().links().delete(uuid=hash_links[0]["uuid"]).execute()
    else:
        from keeptar.backends.embedded import EmbeddedBackend

        EmbeddedBackend(store.home).delete_link(hash_links[0]["uuid"])
    outcomes, _ = _migrate(store)
    unknown = next(o for o in outcomes if o["old_pdh"] == old["portable_data_hash"])
    assert unknown["old_image_id"] == "<unknown>"
    assert unknown["image_id"] == docker_ids[APP]
    names = [
        link
        for link in store.records("links")
        if link["link_class"] == "docker_image_repo+tag"
        and link["head_uuid"] == unknown["collection"]
    ]
    assert [link["name"] for link in names] == [TAGS[APP]]
    assert (
        names[0]["properties"]["image_timestamp"] == hash_links[0]["properties"]["image_timestamp"]
    )


def test_finding_the_images_lists_links_once_for_all_of_them(store: Store) -> None:
    """The hash links of the images found are one listing, not one listing per image."""
    if store.emu is None:
        pytest.skip("counts API requests: the emulator's log")
    assert len(store.old) == 2
    mark = len(store.emu.requests)
    done = store.run("migrate19", "--print-unmigrated")
    assert done.returncode == 0, done.stderr.decode()
    assert len(done.stdout.split()) == 2
    listings = [p for _, p in store.emu.requests[mark:] if p.startswith("/arvados/v1/links")]
    # Four listings: name and hash links (the image list), migration links, the found
    # images' hash links; a listing that finds links takes a second request to see its
    # end (so 7). One listing per image would make 2 more requests for each.
    assert len(listings) <= 7, listings


def test_human_output_and_progress(store: Store) -> None:
    done = store.run("migrate19", "--engine", "native")
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "[1/2] migrating" in err and "[2/2] migrating" in err
    assert done.stdout.decode().splitlines()[-1] == "Successfully migrated 2 image(s)"


def test_a_v2_only_cluster_runs_the_old_names(store: Store, docker_ids: dict[str, str]) -> None:
    if store.emu is None:
        pytest.skip("the server-side image lookup is the emulator's")
    from test_emulator_fidelity import INCOMPATIBLE, refused, run_image

    api = store.emu.api(store.emu.alice)
    store.emu.docker_image_formats = ["v2"]
    assert refused(api, TAGS[APP]) == (422, [INCOMPATIBLE])
    store.emu.docker_image_formats = ["v1", "v2"]
    outcomes, _ = _migrate(store)
    store.emu.docker_image_formats = ["v2"]
    for outcome in outcomes:
        (name,) = outcome["repo_tags"]
        assert run_image(api, name) == outcome["pdh"]
        # The old PDH too leads to the new collection through the migration link.
        assert run_image(api, outcome["old_pdh"]) == outcome["pdh"]


def test_only_the_listed_pdhs(store: Store, docker_ids: dict[str, str], tmp_path: Path) -> None:
    wanted = store.old[MOBY]["portable_data_hash"]
    listing = tmp_path / "pdhs"
    listing.write_text(f"# one\n{wanted}\n\n")
    done = store.run("migrate19", "--engine", "native", "--json", str(listing))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [o["old_pdh"] for o in lines[:-1]] == [wanted]
    rest = store.run("migrate19", "--print-unmigrated", input=b"")
    assert rest.stdout.decode().split() == [store.old[APP]["portable_data_hash"]]
    # - reads the list from standard input
    done = store.run(
        "migrate19", "--engine", "native", "--json", "-",
        input=store.old[APP]["portable_data_hash"].encode() + b"\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _check_migrated(store, docker_ids)
    bad = store.run("migrate19", "--engine", "native", "-", input=b"not-a-pdh\n")
    assert bad.returncode == 2
    assert bad.stderr.decode().startswith("keeptar: error: -:1: 'not-a-pdh' is not a portable")


def test_two_runs_at_once_leave_one_of_each(store: Store, docker_ids: dict[str, str]) -> None:
    runs = [store.popen("migrate19", "--engine", "native", "--json") for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err.decode()
    _check_migrated(store, docker_ids)


def test_jobs(store: Store, docker_ids: dict[str, str]) -> None:
    outcomes, summary = _migrate(store, "--jobs", "2")
    assert summary["migrated"] == 2
    assert sorted(o["index"] for o in outcomes) == [1, 2]
    _check_migrated(store, docker_ids)


@pytest.mark.parametrize(
    ("path", "skip"),
    [
        ("/arvados/v1/collections", 0),  # the v2 collection made, no link yet
        ("/arvados/v1/links", 1),  # its hash link made, not its name
        ("/arvados/v1/links", 2),  # registered, the migration link made, not seen
    ],
)
def test_killed_mid_migration_then_run_again(
    store: Store, docker_ids: dict[str, str], path: str, skip: int
) -> None:
    """SIGKILL while the server carries out a request whose answer never arrives."""
    if store.emu is None:
        pytest.skip("the embedded store registers in one transaction: a kill leaves nothing")
    fault = store.emu.inject("POST", path, skip=skip, hold=3.0)
    run = store.popen("migrate19", "--engine", "native", "--json")
    deadline = time.monotonic() + 120
    while fault.times > 0:
        assert run.poll() is None, run.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # the server has done it and holds the answer
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL
    again = store.run("migrate19", "--engine", "native", "--json")
    assert again.returncode == 0, again.stderr.decode()
    _check_migrated(store, docker_ids)


def test_killed_while_the_second_image_migrates(store: Store, docker_ids: dict[str, str]) -> None:
    """SIGKILL as soon as the second image starts; the next run finishes, doubling nothing."""
    run = store.popen("migrate19", "--engine", "native", "--json")
    assert run.stderr is not None
    for line in run.stderr:
        if line.startswith(b"[2/2] migrating"):
            break
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL
    left = store.run("migrate19", "--print-unmigrated")
    assert len(left.stdout.split()) <= 1  # the first image is done (the second may be)
    again = store.run("migrate19", "--engine", "native", "--json")
    assert again.returncode == 0, again.stderr.decode()
    _check_migrated(store, docker_ids)


def test_a_failed_image_does_not_stop_the_others(store: Store, docker_ids: dict[str, str]) -> None:
    """A v1-hashed collection whose file is no image: reported, the rest migrated, exit 1."""
    empty = ". d41d8cd98f00b204e9800998ecf8427e+0 0:0:broken.tar\n"
    stamp = {"image_timestamp": "2015-01-01T00:00:00Z"}
    if store.emu is not None:
        api = store.emu.api()
        bogus = api.collections().create(body={"manifest_text": empty, "name": "broken"}).execute()
        api.links().create(
            body={
                "link_class": "docker_image_hash",
                "name": "0" * 64,
                "head_uuid": bogus["uuid"],
                "properties": stamp,
            }
        ).execute()
    else:
        from keeptar.backends.embedded import EmbeddedBackend

        local = EmbeddedBackend(store.home)
        bogus = local.create_collection(
            manifest_text=empty, name="broken", owner_uuid=local.current_user().uuid,
            properties={},
        )  # fmt: skip
        local.create_link(
            link_class="docker_image_hash", name="0" * 64, head_uuid=bogus["uuid"], properties=stamp
        )
    done = store.run("migrate19", "--engine", "native", "--json")
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    failed = [o for o in lines[:-1] if not o["ok"]]
    assert [o["old_collection"] for o in failed] == [bogus["uuid"]]
    assert failed[0]["error"] and failed[0]["pdh"] is None
    assert (lines[-1]["migrated"], lines[-1]["failed"]) == (2, 1)
    _check_migrated(store, docker_ids)


def test_admin_only(store: Store) -> None:
    if store.emu is None:
        pytest.skip("the embedded store's user is an admin")
    done = store.run("migrate19", "--engine", "native", admin=False)
    assert done.returncode == 2
    assert done.stderr.decode() == "keeptar: error: migrate19 requires an admin token\n"


def test_no_daemon_names_the_native_engine(store: Store) -> None:
    done = run_keeptar(
        "migrate19", env={**store.env(), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert len(err.splitlines()) == 1 and "--engine native" in err, err
    assert err.startswith("keeptar: error: no Docker daemon")


def test_free_space_per_engine(store: Store) -> None:
    sizes = [old_size(store, name) for name in TAGS]
    docker = json.loads(store.run("migrate19", "--dry-run", "--json").stdout)
    assert docker["space_needed"] == int(max(sizes) * 2.5)
    vfs = store.run("migrate19", "--dry-run", "--json", "--storage-driver", "vfs")
    assert json.loads(vfs.stdout)["space_needed"] == max(sizes) * 20
    native = store.run("migrate19", "--engine", "native", "--dry-run", "--json")
    assert json.loads(native.stdout)["space_needed"] == 0


def old_size(store: Store, name: str) -> int:
    return fixture_path(name).stat().st_size


def test_docker_engine(
    store: Store,
    engine_image: str,  # noqa: F811 - the fixture imported above
    docker_ids: dict[str, str],
) -> None:
    if store.kind != "local":
        pytest.skip("the docker engine runs once, on the embedded store")
    done = run_keeptar(
        "migrate19", "--json", "--storage-driver", "vfs",
        env={**store.env(), "KEEPTAR_MIGRATE19_IMAGE": engine_image},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    _check_migrated(store, docker_ids)


def test_too_little_space_stops_unless_forced(store: Store, tmp_path: Path) -> None:
    """The docker engine's check: an image whose file is bigger than free space / 20 (vfs)."""
    if store.emu is not None:
        pytest.skip("the check is the same on both backends: once is enough")
    import hashlib
    import shutil

    from keeptar.backends.embedded import EmbeddedBackend

    local = EmbeddedBackend(store.home)
    block = bytes(8 << 20)
    locator = local.put_block(block)
    assert locator.startswith(hashlib.md5(block).hexdigest())
    # Four times what would not fit: other processes free space meanwhile.
    count = shutil.disk_usage(tmp_path).free // 20 // len(block) * 4 + 1
    size = count * len(block)
    big = local.create_collection(
        manifest_text=f". {' '.join([locator] * count)} 0:{size}:{'1' * 64}.tar\n",
        name="big v1",
        owner_uuid=local.current_user().uuid,
        properties={},
    )
    local.create_link(
        link_class="docker_image_hash", name="1" * 64, head_uuid=big["uuid"], properties={}
    )
    args = ("migrate19", "--dry-run", "--storage-driver", "vfs", "--tempdir", str(tmp_path))
    stopped = store.run(*args)
    assert stopped.returncode == 1
    err = stopped.stderr.decode().splitlines()[-1]  # after --dry-run's counts
    assert err.startswith(f"keeptar: error: not enough free space in {tmp_path}")
    assert f"{size * 20} needed" in err and "--force" in err
    forced = store.run(*args, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert f"keeptar: warning: not enough free space in {tmp_path}" in forced.stderr.decode()
    assert "going on (--force)" in forced.stderr.decode()
    doc = json.loads(forced.stdout)
    assert (doc["largest_bytes"], doc["space_needed"], doc["space_ok"]) == (size, size * 20, False)
    # The native engine needs no scratch space.
    native = store.run("migrate19", "--engine", "native", "--dry-run", "--json")
    assert native.returncode == 0 and json.loads(native.stdout)["space_ok"] is True
