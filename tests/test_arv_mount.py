"""The real arv-mount (arvados-fuse) over the emulator: browsing ``home/``, ``shared/`` and
``by_id/``, and loading images from the paths it serves without uploading a block.

The FUSE tests need ``/dev/fuse``, ``fusermount`` and ``arv-mount`` (``.ci/run`` installs
them); without them they are skipped and the directory-tree stand-in in ``test_load.py``
still runs.  The emulator's ``groups.contents`` and ``groups.shared``, which arv-mount
lists directories with, are checked through the SDK here too, FUSE or not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture_path, keep_puts, load_truth, run_keeptar

TRUTH = load_truth()
APP = "docker-v2-app.tar"
BUILDAH = "buildah-docker-archive.tar"
SKOPEO = "skopeo-docker-archive.tar"
PAGE = 3  # the emulator's MaxItemsPerResponse here: every listing below spans pages


def fuse_missing() -> str | None:
    """Why the real arv-mount cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if shutil.which("fusermount") is None:
        return "no fusermount (apt-get install fuse)"
    if shutil.which("arv-mount") is None:
        return "arv-mount is missing (pip install arvados-fuse; needs libfuse-dev, pkg-config)"
    return None


needs_fuse = pytest.mark.skipif(fuse_missing() is not None, reason=fuse_missing() or "")


@dataclass
class World:
    """One cluster: Alice's images in her home and her project, Bob's in a project he shares
    with her."""

    emu: Any
    alice_image: dict[str, Any]  # keeptar load --json output, in her home
    project_image: dict[str, Any]  # in "Alice project"
    bob_image: dict[str, Any]
    bob_images: dict[str, Any]  # Bob's project shared with Alice, holding bob_image
    bob_team: dict[str, Any]  # shared with Alice, inside a project of Bob's she cannot read


def load_as(emu: Any, account: Any, *args: str) -> dict[str, Any]:
    result = run_keeptar("load", "--json", *args, env={**emu.env(account), "KEEPTAR_RETRIES": "2"})
    assert result.returncode == 0, result.stderr.decode()
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    from arvados_emulator import Emulator

    with Emulator(max_page_size=PAGE) as emu:
        alice, bob = emu.api(emu.alice), emu.api(emu.bob)
        alice_image = load_as(emu, emu.alice, str(fixture_path(APP)))
        project_image = load_as(
            emu, emu.alice, "--project-uuid", emu.alice_project["uuid"], str(fixture_path(SKOPEO))
        )
        for i in range(PAGE):  # more home entries than one page holds
            alice.collections().create(
                body={"name": f"notes {i}", "manifest_text": ""}, ensure_unique_name=True
            ).execute()
        bob_images = (
            bob.groups().create(body={"name": "Bob images", "group_class": "project"}).execute()
        )
        bob_image = load_as(
            emu, emu.bob, "--project-uuid", bob_images["uuid"], str(fixture_path(BUILDAH))
        )
        bob_team = (
            bob.groups()
            .create(
                body={
                    "name": "Bob team",
                    "group_class": "project",
                    "owner_uuid": emu.bob_project["uuid"],
                }
            )
            .execute()
        )
        emu.share(bob_images["uuid"], emu.alice)
        emu.share(bob_team["uuid"], emu.alice)  # its parent, "Bob project", stays private
        yield World(emu, alice_image, project_image, bob_image, bob_images, bob_team)


def _mounted(path: Path) -> bool:
    """Whether *path* is a mount point (also when its FUSE daemon died: ENOTCONN)."""
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def _unmount(path: Path, process: subprocess.Popen[bytes]) -> None:
    for _ in range(40):
        if not _mounted(path):
            break
        if subprocess.run(["fusermount", "-u", str(path)], capture_output=True).returncode == 0:
            break
        time.sleep(0.25)  # busy: a reader still has it open
    else:
        subprocess.run(["fusermount", "-u", "-z", str(path)], capture_output=True)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def mount(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The real ``arv-mount --read-only`` of Alice's view of *world*."""
    if fuse_missing():
        pytest.skip(fuse_missing() or "")
    root = tmp_path_factory.mktemp("arv-mount")
    point, home, log = root / "mnt", root / "home", root / "arv-mount.log"
    point.mkdir()
    home.mkdir()
    # The emulator serves no event stream (no websocket, no logs API): without
    # --disable-event-listening arv-mount falls back to polling `logs`, every 15 s.
    process = subprocess.Popen(
        [
            "arv-mount",
            "--read-only",
            "--foreground",
            "--disable-event-listening",
            "--logfile",
            str(log),
            str(point),
        ],
        env={**os.environ, **world.emu.env(world.emu.alice), "HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not _mounted(point):
            if process.poll() is not None or time.monotonic() > deadline:
                detail = log.read_text()[-3000:] if log.exists() else ""
                pytest.fail(f"arv-mount did not mount (exit {process.poll()}):\n{detail}")
            time.sleep(0.1)
        yield point
    finally:
        _unmount(point, process)


def every(method: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """All pages of a list call (pages are PAGE items long here)."""
    import arvados.util

    return list(arvados.util.keyset_list_all(method, order_key="uuid", **kwargs))


def links_on(emu: Any, uuid: str) -> list[tuple[str, str, str]]:
    links = every(emu.api().links().list, filters=[["head_uuid", "=", uuid]])
    return sorted((k["link_class"], k["name"], k["owner_uuid"]) for k in links)


def collection(emu: Any, uuid: str) -> dict[str, Any]:
    record: dict[str, Any] = emu.api().collections().get(uuid=uuid).execute()
    return record


# ---- listing: what arv-mount shows ------------------------------------------------------


@needs_fuse
def test_home_lists_every_project_and_collection(world: World, mount: Path) -> None:
    emu, alice = world.emu, world.emu.api(world.emu.alice)
    expected = [  # from plain list calls, not the contents call arv-mount makes
        r["name"]
        for resource in (alice.groups(), alice.collections())
        for r in every(resource.list, filters=[["owner_uuid", "=", emu.alice.uuid]])
        if r.get("group_class", "project") == "project"
    ]
    assert len(expected) == PAGE + 2  # Alice project, her image, the notes: two pages
    assert sorted(os.listdir(mount / "home")) == sorted(expected)
    image = collection(emu, world.alice_image["uuid"])
    assert os.listdir(mount / "home" / image["name"]) == [world.alice_image["file_name"]]


@needs_fuse
def test_shared_lists_what_others_share_and_not_more(world: World, mount: Path) -> None:
    # Bob's home holds "Bob images" (shared) and "Bob project" (private, holding the shared
    # "Bob team"): a project whose owner Alice can read sits under that owner's name, one
    # whose owner she cannot read sits at the top.
    assert sorted(os.listdir(mount / "shared")) == ["Bob Example", "Bob team"]
    assert os.listdir(mount / "shared" / "Bob Example") == ["Bob images"]
    bob_image = collection(world.emu, world.bob_image["uuid"])
    folder = mount / "shared" / "Bob Example" / "Bob images"
    assert os.listdir(folder) == [bob_image["name"]]
    assert os.listdir(folder / bob_image["name"]) == [world.bob_image["file_name"]]


# ---- loading from arv-mount paths: no block uploaded -------------------------------------


@needs_fuse
def test_inspect_and_load_from_by_id(world: World, mount: Path) -> None:
    emu, image = world.emu, world.alice_image
    path = mount / "by_id" / image["portable_data_hash"] / image["file_name"]
    env = {**emu.env(emu.alice), "KEEPTAR_RETRIES": "2"}
    inspected = run_keeptar("inspect", "--json", str(path), env=env)
    assert inspected.returncode == 0, inspected.stderr.decode()
    assert [i["id"] for i in json.loads(inspected.stdout)["images"]] == [
        TRUTH[APP]["images"][0]["id"]
    ]
    puts = keep_puts(emu)
    loaded = load_as(emu, emu.alice, "--tag", "kt/by-id:1", str(path))
    assert keep_puts(emu) == puts
    # Stored already in Alice's home: that collection is reused and gains the name.
    assert loaded["uuid"] == image["uuid"]
    assert loaded["image_id"] == TRUTH[APP]["images"][0]["id"]
    assert ("docker_image_repo+tag", "kt/by-id:1", emu.alice.uuid) in links_on(emu, image["uuid"])
    # Forced, it is a new collection of the same blocks: a plain file would be uploaded.
    project = emu.alice_project["uuid"]
    forced = load_as(emu, emu.alice, "--force", "--project-uuid", project, str(path))
    assert keep_puts(emu) == puts
    assert forced["uuid"] != image["uuid"]
    assert forced["portable_data_hash"] == image["portable_data_hash"]
    assert collection(emu, forced["uuid"])["owner_uuid"] == project


@needs_fuse
def test_load_from_home_and_force_a_named_copy(world: World, mount: Path) -> None:
    emu, image, project = world.emu, world.project_image, world.emu.alice_project["uuid"]
    source = collection(emu, image["uuid"])
    path = mount / "home" / "Alice project" / source["name"] / image["file_name"]
    puts = keep_puts(emu)
    again = load_as(emu, emu.alice, "--project-uuid", project, str(path))
    assert again["uuid"] == image["uuid"]  # the source is the stored image: nothing new
    # --force --name on a mount path whose collection is the stored image, in the target
    # project: a new collection with that name, from the same blocks.
    forced = load_as(
        emu, emu.alice, "--force", "--name", "pinned", "--project-uuid", project, str(path)
    )
    assert keep_puts(emu) == puts  # no upload
    assert forced["uuid"] != image["uuid"]
    assert forced["portable_data_hash"] == image["portable_data_hash"]
    record = collection(emu, forced["uuid"])
    assert (record["name"], record["owner_uuid"]) == ("pinned", project)
    assert record["properties"] == source["properties"]
    assert links_on(emu, forced["uuid"]) == links_on(emu, image["uuid"])
    assert ("docker_image_hash", TRUTH[SKOPEO]["images"][0]["id"], project) in links_on(
        emu, forced["uuid"]
    )
    # Forcing again makes another collection, under a unique name.
    twice = load_as(
        emu, emu.alice, "--force", "--name", "pinned", "--project-uuid", project, str(path)
    )
    assert twice["uuid"] not in (forced["uuid"], image["uuid"])
    assert collection(emu, twice["uuid"])["name"].startswith("pinned (")
    assert keep_puts(emu) == puts


@needs_fuse
def test_load_from_a_shared_project(world: World, mount: Path) -> None:
    emu, image = world.emu, world.bob_image
    bob_record = collection(emu, image["uuid"])
    path = mount / "shared" / "Bob Example" / "Bob images" / bob_record["name"]
    puts = keep_puts(emu)
    project = emu.alice_project["uuid"]
    loaded = load_as(emu, emu.alice, "--project-uuid", project, str(path / image["file_name"]))
    assert keep_puts(emu) == puts
    record = collection(emu, loaded["uuid"])
    assert loaded["uuid"] != image["uuid"]  # Alice cannot write Bob's: her own copy
    assert record["owner_uuid"] == project
    assert record["portable_data_hash"] == bob_record["portable_data_hash"]
    assert record["name"] == bob_record["name"]  # the same default name, in her project
    assert loaded["image_id"] == TRUTH[BUILDAH]["images"][0]["id"]
    bobs = [(c, n) for c, n, _ in links_on(emu, image["uuid"])]
    assert links_on(emu, loaded["uuid"]) == [(c, n, project) for c, n in bobs]
    assert ("docker_image_hash", TRUTH[BUILDAH]["images"][0]["id"]) in bobs


# ---- the emulator's side, through the SDK (no FUSE needed) -------------------------------


def test_contents_pages_filters_and_hides_manifests(world: World) -> None:
    emu = world.emu
    alice = emu.api(emu.alice)
    before = sum(1 for _, p in emu.requests if p == "/arvados/v1/groups/contents")
    listed = every(  # exactly as arv-mount's ProjectDirectory lists
        alice.groups().contents,
        uuid=emu.alice.uuid,
        filters=[["uuid", "is_a", "arvados#collection"]],
    )
    calls = sum(1 for _, p in emu.requests if p == "/arvados/v1/groups/contents") - before
    owned = every(alice.collections().list, filters=[["owner_uuid", "=", emu.alice.uuid]])
    assert sorted(c["uuid"] for c in listed) == sorted(c["uuid"] for c in owned)
    assert calls >= 2 and len(listed) > PAGE
    assert all("manifest_text" not in c and c["kind"] == "arvados#collection" for c in listed)
    assert all(c["current_version_uuid"] == c["uuid"] for c in listed)
    groups = (
        alice.groups()
        .contents(
            uuid=emu.alice.uuid,
            filters=[["uuid", "is_a", "arvados#group"], ["groups.group_class", "=", "project"]],
        )
        .execute()
    )
    assert [g["uuid"] for g in groups["items"]] == [emu.alice_project["uuid"]]
    assert groups["items"][0]["can_write"] is True and groups["items_available"] == 1
    # Bob's home seen by Alice: only what is shared with her.
    bobs = alice.groups().contents(uuid=emu.bob.uuid).execute()
    assert [g["uuid"] for g in bobs["items"]] == [world.bob_images["uuid"]]
    from googleapiclient.errors import HttpError

    for call, status in [
        (alice.groups().contents(uuid=emu.bob_project["uuid"]), 404),  # not readable
        (alice.groups().contents(filters=[["nosuch.name", "=", "x"]]), 422),
    ]:
        with pytest.raises(HttpError) as caught:
            call.execute(num_retries=0)
        assert caught.value.resp.status == status


def test_shared_returns_top_projects_and_their_readable_owners(world: World) -> None:
    emu = world.emu
    alice = emu.api(emu.alice)
    shared = (
        alice.groups()
        .shared(
            filters=[["group_class", "in", ["project", "filter"]]],
            order="uuid",
            limit=10000,
            count="none",
            include="owner_uuid",
        )
        .execute()
    )
    assert [g["uuid"] for g in shared["items"]] == sorted(
        [world.bob_images["uuid"], world.bob_team["uuid"]]
    )
    assert "items_available" not in shared and shared["limit"] == PAGE
    # Bob (a user Alice may read) is included; "Bob project" (not shared with her) is not.
    assert [r["uuid"] for r in shared["included"]] == [emu.bob.uuid]
    assert shared["included"][0]["first_name"] == "Bob"
    own = emu.api(emu.bob).groups().shared(include="owner_uuid").execute()
    assert own["items"] == [] and own["included"] == []  # all of Bob's are in his home


# ---- --force with a source already in Keep, on both backends (no FUSE needed) ------------


def test_force_from_a_collection_makes_a_named_copy_of_its_blocks(
    backend: Any, request: pytest.FixtureRequest
) -> None:
    from keeptar.backends.arvados import ArvadosBackend
    from keeptar.load import load_image

    emu = request.getfixturevalue("emulator") if isinstance(backend, ArvadosBackend) else None
    first = load_image(backend, str(fixture_path(APP)))
    source = backend.get_collection(first.uuid)
    puts = keep_puts(emu)
    name = f"forced {os.urandom(4).hex()}"
    forced = load_image(backend, first.uuid, force=True, name=name)
    assert keep_puts(emu) == puts
    assert forced.uuid != first.uuid and forced.reused
    record = backend.get_collection(forced.uuid)
    assert (record["name"], record["owner_uuid"]) == (name, source["owner_uuid"])
    assert record["portable_data_hash"] == source["portable_data_hash"]
    assert forced.image_id == TRUTH[APP]["images"][0]["id"]
