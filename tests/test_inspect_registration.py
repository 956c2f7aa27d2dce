"""``keeptar inspect`` of a stored image: its registration, accepted_by_server, problems (issue 10).

Broken registrations are built with the backends' own calls (the real SDK over
HTTP on the emulator).  Image IDs and creation times come from the archive
through ``tarfile`` and ``hashlib``, not keeptar's parser; on the emulator,
``accepted_by_server`` is checked against the port of the API server's image
lookup (a committed container request), so the expectation is the server's.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from test_load import unique_image

from conftest import add_migration_link, fixture_path, run_keeptar
from keeptar.archive import inspect_stored_image
from keeptar.errors import NotFoundError
from keeptar.keep.manifest import escape_name
from keeptar.load import load_image

APP = fixture_path("docker-v2-app.tar")
HASH = "docker_image_hash"
NAME = "docker_image_repo+tag"


def archive_facts(archive: Path) -> tuple[str, str]:
    """(image ID, config ``created``) of a one-image docker archive, read with tarfile."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
    return "sha256:" + hashlib.sha256(config).hexdigest(), json.loads(config)["created"]


def store(backend: Any, archive: Path, files: list[str]) -> str:
    """A manifest with the archive's bytes under each of *files* (its blocks stored)."""
    data = archive.read_bytes()
    locator = backend.put_block(data)
    tokens = " ".join(f"0:{len(data)}:{escape_name(name)}" for name in files)
    return f". {locator} {tokens}\n"


def register(
    backend: Any, manifest: str, links: list[tuple[str, str, str | None]]
) -> dict[str, Any]:
    """A collection of *manifest* in the home project with *links* (class, name, timestamp)."""
    owner = backend.current_user().uuid
    record = backend.create_collection(
        manifest_text=manifest,
        name=f"broken image {uuidlib.uuid4()}",
        owner_uuid=owner,
        properties={},
    )
    for link_class, name, stamp in links:
        backend.create_link(
            link_class=link_class,
            name=name,
            head_uuid=record["uuid"],
            owner_uuid=owner,
            properties={} if stamp is None else {"image_timestamp": stamp},
        )
    return dict(record)


def server_runs(request: pytest.FixtureRequest, backend: Any, image: str) -> bool | None:
    """On the emulator: whether the API server accepts a container request for *image*."""
    if backend.kind == "local":
        return None
    import arvados.errors
    from test_emulator_fidelity import request_body

    emu = request.getfixturevalue("emulator")
    api = emu.api(emu.alice)
    try:
        api.container_requests().create(body=request_body(image)).execute(num_retries=0)
    except arvados.errors.ApiError as error:
        assert error.resp.status == 422, error
        return False
    return True


def inspect_json(*args: str) -> tuple[int, dict[str, Any], str]:
    done = run_keeptar("inspect", "--json", *args)
    doc = json.loads(done.stdout) if done.returncode == 0 else {}
    return done.returncode, doc, done.stderr.decode()


def test_a_loaded_image_is_accepted_with_no_problems(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    archive = unique_image(APP, tmp_path)
    image_id, created = archive_facts(archive)
    loaded = load_image(backend, str(archive), tag="insp/good:1")
    for target in ("insp/good:1", loaded.uuid, loaded.portable_data_hash, image_id[7:19]):
        status, doc, err = inspect_json(target)
        assert status == 0, err
        assert doc["images"][0]["id"] == image_id  # the archive facts are still there
        assert doc["accepted_by_server"] is True and doc["problems"] == []
        assert doc["collection"]["uuid"] == loaded.uuid
        assert doc["collection"]["files"] == [
            {"path": f"{image_id}.tar", "size": archive.stat().st_size}
        ]
        assert doc["properties"] == {"docker-image-repo-tag": "insp/good:1"}
        links = {(link["link_class"], link["name"]): link for link in doc["links"]}
        assert set(links) == {(HASH, image_id), (NAME, "insp/good:1")}
        assert {link["image_timestamp"] for link in links.values()} == {created}
        assert {link["owner_uuid"] for link in links.values()} == {backend.current_user().uuid}
    assert server_runs(request, backend, loaded.portable_data_hash) in (True, None)
    assert server_runs(request, backend, "insp/good:1") in (True, None)
    text = run_keeptar("inspect", "insp/good:1").stdout.decode()
    assert "\nRegistration\n" in text and "Accepted by server: yes" in text
    assert "Problems:      none" in text


def test_a_wrong_hash_link_is_a_problem_but_accepted(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    archive = unique_image(APP, tmp_path)
    image_id, created = archive_facts(archive)
    wrong = "sha256:" + hashlib.sha256(image_id.encode()).hexdigest()
    record = register(
        backend,
        store(backend, archive, [f"{image_id}.tar"]),
        [(HASH, wrong, created), (NAME, "insp/wronghash:1", created)],
    )
    _, registration, _, _ = inspect_stored_image(backend, record["uuid"])
    assert registration.problems == (
        f"docker_image_hash link {_link(registration, HASH)['uuid']} says image {wrong}, "
        f"but the archive holds {image_id}",
    )
    # The server reads no hash link for a PDH, nor for a repo:tag that a repo+tag link
    # names (collection.rb), and crunch-run runs the ID the file name gives: it runs.
    assert registration.accepted_by_server
    assert server_runs(request, backend, record["portable_data_hash"]) in (True, None)
    assert server_runs(request, backend, "insp/wronghash:1") in (True, None)
    status, doc, _ = inspect_json("insp/wronghash:1")
    assert status == 0 and doc["accepted_by_server"] is True and len(doc["problems"]) == 1


def test_a_renamed_file_is_not_accepted(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    archive = unique_image(APP, tmp_path)
    image_id, created = archive_facts(archive)
    record = register(
        backend,
        store(backend, archive, ["image.tar"]),
        [(HASH, image_id, created), (NAME, "insp/renamed:1", created)],
    )
    _, registration, _, _ = inspect_stored_image(backend, record["portable_data_hash"])
    assert registration.accepted_by_server is False
    assert server_runs(request, backend, record["portable_data_hash"]) in (False, None)
    assert server_runs(request, backend, "insp/renamed:1") in (False, None)
    assert len(registration.problems) == 2
    assert registration.problems[0].startswith("file name image.tar does not fit")
    assert registration.problems[1] == (
        f"file name image.tar is not the archive's image ID: the archive holds {image_id} "
        f"(the file should be {image_id}.tar)"
    )


# How the file is laid out ({loc}: its block, {n}: its size, {file}: <image id>.tar,
# escaped), which links name the collection, keeptar's verdict, and the server's for a
# container request by PDH (collection.rb, over the emulator's port).  Where they differ
# it is crunch-run's rule: one top-level .tar, named for the ID the archive holds (None:
# with no top-level .tar, keeptar does not take the collection for an image at all).
LAYOUTS = {
    "registered": (". {loc} 0:{n}:{file}\n", (HASH, NAME), True, True),
    "no links": (". {loc} 0:{n}:{file}\n", (), True, True),
    "only a repo+tag link": (". {loc} 0:{n}:{file}\n", (NAME,), True, True),
    "a hash link naming another image": (". {loc} 0:{n}:{file}\n", ("wrong", NAME), True, True),
    "an empty directory beside it": (
        ". {loc} 0:{n}:{file}\n./empty {loc} 0:0:.\n",
        (HASH,),
        True,
        True,
    ),
    "an empty placeholder first": (". {loc} 0:0:. 0:{n}:{file}\n", (HASH,), False, False),
    "a second file": (". {loc} 0:{n}:{file} 0:1:notes.txt\n", (HASH,), False, False),
    "only in a directory": ("./sub {loc} 0:{n}:{file}\n", (HASH,), None, True),
    "a line before the ID": (". {loc} 0:{n}:x\\012{file}\n", (HASH,), False, True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_accepted_agrees_with_the_server_lookup(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest, layout: str
) -> None:
    """Hash links do not decide acceptance: the server resolves a PDH without links and
    a repo:tag through repo+tag links; files are counted and named as collection.rb
    counts and names them (empty-directory placeholders skipped, the first file's name
    matched line by line, as Ruby's ^ and $ do)."""
    archive = unique_image(APP, tmp_path)
    image_id, created = archive_facts(archive)
    data = archive.read_bytes()
    template, links, accepted, server = LAYOUTS[layout]
    manifest = template.format(
        loc=backend.put_block(data), n=len(data), file=escape_name(f"{image_id}.tar")
    )
    name = f"insp/agree{uuidlib.uuid4().hex[:8]}:1"
    wrong = "sha256:" + hashlib.sha256(image_id.encode()).hexdigest()
    named = {HASH: (HASH, image_id, created), "wrong": (HASH, wrong, created)}
    record = register(backend, manifest, [named.get(kind, (NAME, name, created)) for kind in links])
    assert server_runs(request, backend, record["portable_data_hash"]) in (server, None)
    if NAME in links:
        assert server_runs(request, backend, name) in (server, None)
    if accepted is None:
        with pytest.raises(NotFoundError, match=r"holds no \.tar image file"):
            inspect_stored_image(backend, record["uuid"])
        return
    _, registration, _, _ = inspect_stored_image(backend, record["uuid"])
    assert registration.accepted_by_server is accepted, registration.problems
    if server and not accepted:  # only crunch-run's rule says no
        assert not [p for p in registration.problems if "does not fit" in p]
    if layout == "an empty directory beside it":
        assert registration.problems == ()


def test_two_tar_files_are_not_accepted(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    archive = unique_image(APP, tmp_path)
    image_id, created = archive_facts(archive)
    record = register(
        backend,
        store(backend, archive, [f"{image_id}.tar", "copy.tar"]),
        [(HASH, image_id, created)],
    )
    info, registration, _, _ = inspect_stored_image(backend, record["uuid"])
    assert info is not None and info.images[0].id == image_id  # the hash link's file
    assert registration.accepted_by_server is False
    assert registration.problems == (
        f"the collection holds 2 files (2 top-level .tar): the server needs exactly one "
        f"<image id>.tar ({image_id}.tar, copy.tar)",
    )
    assert server_runs(request, backend, record["portable_data_hash"]) in (False, None)
    status, doc, _ = inspect_json(record["uuid"])
    assert status == 0 and doc["accepted_by_server"] is False
    text = run_keeptar("inspect", record["uuid"]).stdout.decode()
    assert "Accepted by server: no" in text and "\n  - the collection holds 2 files" in text


def test_a_timestamp_mismatch_is_a_problem_but_accepted(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    archive = unique_image(APP, tmp_path)
    image_id, created = archive_facts(archive)
    stamp = "2001-02-03T04:05:06Z"
    record = register(
        backend,
        store(backend, archive, [f"{image_id}.tar"]),
        [(HASH, image_id, stamp), (NAME, "insp/stamp:1", created)],
    )
    _, registration, _, _ = inspect_stored_image(backend, "insp/stamp:1")
    assert registration.collection["uuid"] == record["uuid"]
    assert registration.accepted_by_server is True
    assert server_runs(request, backend, record["portable_data_hash"]) in (True, None)
    assert registration.problems == (
        f"docker_image_hash link {_link(registration, HASH)['uuid']} ({image_id}) has "
        f"image_timestamp {stamp}, but the archive's config says created {created}",
    )


def test_an_unknown_image_is_one_line_and_exit_6(backend: Any) -> None:
    done = run_keeptar("inspect", "insp/nothing-here:1")
    assert done.returncode == 6
    assert done.stderr.decode().splitlines() == [
        "keeptar: error: no file, collection or image 'insp/nothing-here:1' "
        "(by name or image ID prefix)"
    ]
    missing_file = run_keeptar("inspect", "missing.tar")
    assert missing_file.returncode == 2 and b"cannot open" in missing_file.stderr


def _link(registration: Any, link_class: str) -> dict[str, Any]:
    (link,) = [link for link in registration.links if link["link_class"] == link_class]
    return dict(link)


def test_migration_links_to_and_from_it_are_reported(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    archive = unique_image(APP, tmp_path)
    _, created = archive_facts(archive)
    new = load_image(backend, str(archive), tag="insp/mig:2")
    v1_id = uuidlib.uuid4().hex * 2  # a Docker v1 file name: the server refuses it on v2 only
    old = register(backend, store(backend, archive, [f"{v1_id}.tar"]), [(HASH, v1_id, created)])
    migration, viewer = add_migration_link(
        backend, request, old["portable_data_hash"], new.portable_data_hash
    )
    expected = (old["portable_data_hash"], new.portable_data_hash, migration["owner_uuid"])
    for collection in (new.uuid, old["uuid"]):
        _, registration, _, _ = inspect_stored_image(viewer, collection)
        moves = [
            (link["tail_uuid"], link["head_uuid"], link["owner_uuid"])
            for link in registration.links
            if link["link_class"] == "docker_image_migration"
        ]
        assert moves == [expected]
    _, old_registration, _, _ = inspect_stored_image(viewer, old["uuid"])
    formats = viewer.server_facts().docker_image_formats
    if "v1" not in formats:
        assert old_registration.accepted_by_server is False
        assert old_registration.problems[0].endswith(
            f": the server runs {new.portable_data_hash} instead, where its "
            "docker_image_migration link leads"
        )
        if backend.kind != "local":  # the server runs the migrated image instead
            from test_emulator_fidelity import run_image

            emu = request.getfixturevalue("emulator")
            api = emu.api(emu.alice)
            assert run_image(api, old["portable_data_hash"]) == new.portable_data_hash
    assert any(p.startswith(f"file name {v1_id}.tar is not") for p in old_registration.problems)


def test_verify_reports_a_missing_block(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest, local_home: Path
) -> None:
    archive = unique_image(APP, tmp_path)
    loaded = load_image(backend, str(archive), tag="insp/lost:1")
    locator = backend.get_collection(loaded.uuid)["manifest_text"].split()[1]
    md5, size = locator.split("+")[:2]
    if backend.kind == "local":
        holders = list(local_home.rglob(md5))
    else:
        emu = request.getfixturevalue("emulator")
        holders = [folder / md5 for folder in emu.block_dirs if (folder / md5).is_file()]
    assert holders
    _, intact, _, _ = inspect_stored_image(backend, loaded.uuid, verify=True)
    assert intact.problems == ()
    for path in holders:
        path.unlink()
    # (This process's SDK may still hold the block in its cache: the archive facts
    # may come from there, the check that the block is stored may not.)
    _, registration, _, _ = inspect_stored_image(backend, loaded.uuid, verify=True)
    assert registration.problems == (
        f"block {md5}+{size} of {loaded.file_name} is missing from Keep",
    )
    assert registration.accepted_by_server is False  # crunch-run cannot read the file
    status, doc, err = inspect_json("--verify", loaded.uuid)
    assert status == 0, err
    # The one block held the metadata too: a fresh process reads no archive facts.
    assert doc["problems"] == list(registration.problems) and "images" not in doc
    assert doc["accepted_by_server"] is False


def test_an_ambiguous_id_prefix_is_a_usage_error(backend: Any, tmp_path: Path) -> None:
    archive = unique_image(APP, tmp_path)
    _, created = archive_facts(archive)
    prefix = uuidlib.uuid4().hex[:16]
    ids = [f"sha256:{prefix}{uuidlib.uuid4().hex}{uuidlib.uuid4().hex[:16]}" for _ in range(2)]
    for image_id in ids:
        register(backend, store(backend, archive, [f"{image_id}.tar"]), [(HASH, image_id, created)])
    done = run_keeptar("inspect", prefix)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    assert lines[0].startswith(f"keeptar: error: image ID prefix '{prefix}' is ambiguous")
    status, doc, err = inspect_json(ids[0][7:30])
    assert status == 0, err
    assert [link["name"] for link in doc["links"]] == [ids[0]]
    assert doc["accepted_by_server"] is False  # the file is not the archive's image ID


def test_a_pdh_names_the_copy_registered_as_an_image(backend: Any, tmp_path: Path) -> None:
    archive = unique_image(APP, tmp_path)
    loaded = load_image(backend, str(archive), tag="insp/pdh:1")
    manifest = backend.get_collection(loaded.uuid)["manifest_text"]
    copy = register(backend, manifest, [])  # newer, same PDH, no links
    assert copy["portable_data_hash"] == loaded.portable_data_hash
    _, registration, _, _ = inspect_stored_image(backend, loaded.portable_data_hash)
    assert registration.collection["uuid"] == loaded.uuid
    assert registration.accepted_by_server and registration.problems == ()
    _, bare, _, _ = inspect_stored_image(backend, copy["uuid"])
    assert bare.links == () and bare.accepted_by_server  # a PDH needs no link
    assert bare.problems == (
        f"no docker_image_hash link names the collection (image {loaded.image_id})",
    )
