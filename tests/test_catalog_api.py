"""The #9045 catalog API (issue 10): search, naming, find_or_create_image; tag/push/untag.

Search order is checked against the SDK's own ``list_images_in_arv`` on the same
links (emulator), and every registration against the store's own records.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
from test_load import unique_image

from conftest import (
    add_migration_link,
    docker_image_id,
    docker_load,
    fixture_path,
    keep_puts,
    run_keeptar,
)
from keeptar.catalog import (
    ImageMatch,
    add_image_hash,
    add_image_name,
    find_or_create_image,
    search_images,
    search_images_by_hash,
    search_images_by_name,
)
from keeptar.errors import ArchiveError, ConflictError, NotFoundError, UsageError
from keeptar.load import load_image

APP = fixture_path("docker-v2-app.tar")
HASH = "docker_image_hash"
NAME = "docker_image_repo+tag"


def new_project(backend: Any, request: pytest.FixtureRequest) -> str:
    """A fresh empty project of the test user's."""
    name = f"catalog {uuidlib.uuid4()}"
    if backend.kind == "local":
        return str(backend.create_project(name)["uuid"])
    emu = request.getfixturevalue("emulator")
    group = (
        emu.api(emu.alice)
        .groups()
        .create(body={"group": {"name": name, "group_class": "project"}})
        .execute()
    )
    return str(group["uuid"])


def load(backend: Any, tmp_path: Path, project: str, tag: str) -> Any:
    """A new image (an ID no other test has) loaded into *project* as *tag*."""
    folder = tmp_path / uuidlib.uuid4().hex
    folder.mkdir()
    return load_image(backend, str(unique_image(APP, folder)), project_uuid=project, tag=tag)


def links_in(backend: Any, project: str) -> list[dict[str, Any]]:
    return list(backend.list_links([["owner_uuid", "=", project]]))


def collections_in(backend: Any, project: str) -> list[dict[str, Any]]:
    return list(backend.list_collections([["owner_uuid", "=", project]]))


def rows(found: list[ImageMatch]) -> list[tuple[str, str, str, str]]:
    return [(m.collection_uuid, m.repo, m.tag, m.image_id) for m in found]


def sdk_rows(emu: Any, **kwargs: Any) -> list[tuple[str, str, str, str]]:
    from arvados.commands.keepdocker import list_images_in_arv

    listed = list_images_in_arv(emu.api(emu.alice), 2, **kwargs)
    return [(uuid, info["repo"], info["tag"], info["dockerhash"]) for uuid, info in listed]


@pytest.fixture
def ordered(backend: Any, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Four images in a fresh project, all also named ``order/x:shared``: two with
    image timestamps (2021, 2023), two with none (made in that order)."""
    project = new_project(backend, request)
    loaded = [load(backend, tmp_path, project, f"order/x:own{i}") for i in range(4)]
    stamps = ["2021-01-01T00:00:00Z", "2023-01-01T00:00:00Z", None, None]
    for result, stamp in zip(loaded, stamps, strict=True):
        backend.create_link(
            link_class=NAME,
            name="order/x:shared",
            head_uuid=result.uuid,
            owner_uuid=project,
            properties={"image_timestamp": stamp} if stamp else {},
        )
    return {"project": project, "loaded": loaded}


def test_search_by_name_newest_image_first_missing_timestamps_last(
    backend: Any, ordered: dict[str, Any]
) -> None:
    project, loaded = ordered["project"], ordered["loaded"]
    found = search_images_by_name(backend, "order/x:shared", project)
    assert [m.collection_uuid for m in found] == [
        loaded[1].uuid,  # image_timestamp 2023
        loaded[0].uuid,  # 2021
        loaded[3].uuid,  # none: then the newest link
        loaded[2].uuid,
    ]
    assert found[0].image_timestamp == "2023-01-01T00:00:00Z" and found[3].image_timestamp is None
    assert [m.image_id for m in found] == [loaded[i].image_id for i in (1, 0, 3, 2)]
    assert [m.portable_data_hash for m in found] == [
        loaded[i].portable_data_hash for i in (1, 0, 3, 2)
    ]
    assert {m.owner_uuid for m in found} == {project}
    assert {(m.repo, m.tag) for m in found} == {("order/x", "shared")}
    # No tag: every tag of the repository (the four own tags and the shared one).
    every = search_images_by_name(backend, "order/x", project)
    assert {m.name for m in every} == {f"order/x:own{i}" for i in range(4)} | {"order/x:shared"}
    assert len(every) == 8
    assert search_images_by_name(backend, "order/x:none", project) == []
    assert search_images_by_name(backend, "order/xy", project) == []
    # Outside the project: nothing of it.
    other = search_images_by_name(backend, "order/x:shared", "zzzzz-j7d0g-000000000000000")
    assert other == []


def test_search_by_hash_prefix_with_or_without_sha256(
    backend: Any, ordered: dict[str, Any]
) -> None:
    project, loaded = ordered["project"], ordered["loaded"]
    image_id = loaded[2].image_id
    hexpart = image_id.removeprefix("sha256:")
    for prefix in (image_id[:19], hexpart[:12], hexpart.upper()[:12], image_id):
        found = search_images_by_hash(backend, prefix, project)
        assert {m.collection_uuid for m in found} == {loaded[2].uuid}, prefix
        assert {m.name for m in found} == {"order/x:own2", "order/x:shared"}
    for bad in ("xyz", "", "sha256:", "ab%"):
        with pytest.raises(UsageError, match="not an image ID prefix"):
            search_images_by_hash(backend, bad, project)
    # search_images: a name first, else the hash prefix.
    assert rows(search_images(backend, hexpart[:10], project)) == rows(
        search_images_by_hash(backend, hexpart[:10], project)
    )
    assert rows(search_images(backend, "order/x:own1", project)) == [
        (loaded[1].uuid, "order/x", "own1", loaded[1].image_id)
    ]
    assert search_images(backend, "not-there", project) == []


def test_search_order_is_the_sdks(ordered: dict[str, Any], request: pytest.FixtureRequest) -> None:
    backend = request.getfixturevalue("backend")
    if backend.kind != "arvados":
        pytest.skip("the SDK lists images on Arvados")
    emu = request.getfixturevalue("emulator")
    project, loaded = ordered["project"], ordered["loaded"]
    mine = rows(search_images_by_name(backend, "order/x:shared", project))
    theirs = sdk_rows(emu, image_name="order/x", image_tag="shared", project_uuid=project)
    assert mine == theirs and len(mine) == 4
    prefix = loaded[0].image_id[:20]
    assert rows(search_images(backend, prefix, project)) == sdk_rows(
        emu, image_name=prefix, project_uuid=project
    )
    # A collection with a hash link only is listed as <none>, as the SDK lists it.
    bare = load(backend, Path(request.getfixturevalue("tmp_path")), project, "order/y:bare")
    for link in backend.list_links([["head_uuid", "=", bare.uuid], ["link_class", "=", NAME]]):
        backend.delete_link(link["uuid"])
    mine = rows(search_images_by_hash(backend, bare.image_id, project))
    assert mine == [(bare.uuid, "<none>", "<none>", bare.image_id)]
    assert mine == sdk_rows(emu, image_name=bare.image_id, project_uuid=project)


def test_find_or_create_image_copies_by_manifest_once(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source_project, target = new_project(backend, request), new_project(backend, request)
    source = load(backend, tmp_path, source_project, "fc/app:1")
    emu = request.getfixturevalue("emulator") if backend.kind == "arvados" else None
    puts = keep_puts(emu)
    record = find_or_create_image(backend, target, source.uuid, image_name="fc/app")
    assert keep_puts(emu) == puts  # copied by manifest: no block uploaded
    assert record["owner_uuid"] == target and record["uuid"] != source.uuid
    assert record["portable_data_hash"] == source.portable_data_hash
    links = links_in(backend, target)
    assert sorted((link["link_class"], link["name"]) for link in links) == [
        (HASH, source.image_id),
        (NAME, "fc/app:latest"),
    ]
    assert {link["head_uuid"] for link in links} == {record["uuid"]}
    before = snapshot(backend, target)
    again = find_or_create_image(backend, target, source.portable_data_hash, "fc/app:latest")
    assert again["uuid"] == record["uuid"]
    assert snapshot(backend, target) == before
    assert {link["properties"].get("image_timestamp") for link in links} == {source.created}
    # Hash only, in the source's own project: the source itself, nothing new.
    own = find_or_create_image(backend, source_project, source.uuid, image_hash=source.image_id)
    assert own["uuid"] == source.uuid
    assert len(links_in(backend, source_project)) == 2


def test_find_or_create_image_refusals(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project = new_project(backend, request)
    source = load(backend, tmp_path, project, "fc/refuse:1")
    with pytest.raises(UsageError, match="name or an image hash"):
        find_or_create_image(backend, project, source.uuid)
    other = "sha256:" + "0" * 64
    with pytest.raises(UsageError, match="is not the image ID"):
        find_or_create_image(backend, project, source.uuid, image_hash=other)
    with pytest.raises(UsageError, match="not a valid image name"):
        find_or_create_image(backend, project, source.uuid, image_name="Upper/Case")
    prefix = backend.server_facts().uuid_prefix
    with pytest.raises(NotFoundError):
        find_or_create_image(backend, f"{prefix}-j7d0g-nosuchproject00", source.uuid, "a/b")
    text = backend.create_collection(
        manifest_text=". d41d8cd98f00b204e9800998ecf8427e+0 0:0:notes.txt\n",
        name=f"not an image {uuidlib.uuid4()}",
        owner_uuid=project,
        properties={},
    )
    with pytest.raises(ArchiveError, match="not a Docker image"):
        find_or_create_image(backend, project, text["uuid"], image_name="a/b")
    assert len(links_in(backend, project)) == 2  # nothing registered by the refusals
    if backend.kind == "arvados":
        emu = request.getfixturevalue("emulator")
        with pytest.raises(ConflictError, match="cannot write"):
            find_or_create_image(backend, emu.bob.uuid, source.uuid, "a/b")


def test_add_image_name_and_hash(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project, other = new_project(backend, request), new_project(backend, request)
    source = load(backend, tmp_path, project, "names/app:1")
    made = add_image_name(backend, other, source.uuid, "names/app")
    assert len(made.created) == 1
    (link,) = links_in(backend, other)
    assert (link["link_class"], link["name"], link["head_uuid"]) == (
        NAME,
        "names/app:latest",
        source.uuid,
    )
    assert link["properties"].get("image_timestamp") == source.created
    assert add_image_name(backend, other, source.uuid, "names/app:latest").created == ()
    with pytest.raises(UsageError, match="is not the image ID"):  # a v2 ID has sha256:
        add_image_hash(backend, other, source.uuid, source.image_id.removeprefix("sha256:"))
    upper = source.image_id.upper().replace("SHA", "sha")
    made = add_image_hash(backend, other, source.uuid, upper)
    assert len(made.created) == 1
    assert sorted(link["name"] for link in links_in(backend, other)) == [
        "names/app:latest",
        source.image_id,
    ]


# ---- the commands: keeptar tag, push, untag ------------------------------------------------


def cli(*args: str) -> Any:
    """Run keeptar (the backend fixture has pointed the environment at its store)."""
    return run_keeptar(*args)


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def snapshot(backend: Any, *projects: str) -> list[Any]:
    """What the projects hold (manifests are left out: their signatures change)."""
    fields = ["uuid", "name", "portable_data_hash", "modified_at", "properties"]
    return [
        (
            list(backend.list_collections([["owner_uuid", "=", p]], select=fields)),
            links_in(backend, p),
        )
        for p in projects
    ]


def test_tag_push_untag_twice_create_nothing_new(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source_project, target = new_project(backend, request), new_project(backend, request)
    source = load(backend, tmp_path, source_project, "cli/app:1")

    # tag, in the source's own project (the default): one name link on the source.
    tagged = cli_json("tag", "cli/app:1", "cli/app:2")
    assert tagged["collection"] == source.uuid and tagged["project_uuid"] == source_project
    assert len(tagged["created"]) == 1 and tagged["image_id"] == source.image_id
    before = snapshot(backend, source_project, target)
    assert cli_json("tag", "cli/app:1", "cli/app:2")["created"] == []
    assert snapshot(backend, source_project, target) == before

    # tag by ID prefix into another project: a copy by manifest plus two links.
    prefix = source.image_id.removeprefix("sha256:")[:16]
    copied = cli_json("tag", prefix, "cli/copy", "--project-uuid", target)
    assert copied["project_uuid"] == target and copied["collection"] != source.uuid
    assert copied["portable_data_hash"] == source.portable_data_hash
    assert len(copied["created"]) == 3
    assert sorted(link["name"] for link in links_in(backend, target)) == [
        "cli/copy:latest",
        source.image_id,
    ]
    before = snapshot(backend, source_project, target)
    assert cli_json("tag", prefix, "cli/copy", "--project-uuid", target)["created"] == []
    assert snapshot(backend, source_project, target) == before

    # push: the best image of that name already in Keep, into the target project.
    pushed = cli_json("push", "cli/app:2", "--project-uuid", target)
    assert pushed["from"] == "keep" and pushed["collection"] == copied["collection"]
    assert len(pushed["created"]) == 1
    before = snapshot(backend, source_project, target)
    assert cli_json("push", "cli/app:2", "--project-uuid", target)["created"] == []
    assert snapshot(backend, source_project, target) == before

    # untag: that name's links in the project only; collections and hash links stay.
    removed = cli_json("untag", "cli/app:2", "--project-uuid", target)
    assert len(removed["removed"]) == 1
    after = links_in(backend, target)
    assert sorted(link["name"] for link in after) == ["cli/copy:latest", source.image_id]
    assert len(collections_in(backend, target)) == 1
    assert any(link["name"] == "cli/app:2" for link in links_in(backend, source_project))
    again = cli("untag", "cli/app:2", "--project-uuid", target)
    assert again.returncode == 6
    assert again.stderr.decode() == (
        f"keeptar: error: no image named cli/app:2 in project {target}\n"
    )
    assert links_in(backend, target) == after
    human = cli("untag", "cli/copy", "--project-uuid", target)
    assert human.returncode == 0 and human.stdout == b"removed 1 link naming cli/copy:latest\n"


def test_push_between_projects_uploads_no_block(
    emulator: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    with emulator.environment(emulator.alice):
        store = ArvadosBackend()
        source_project, target = new_project(store, request), new_project(store, request)
        source = load(store, tmp_path, source_project, "push/app:1")
        puts = keep_puts(emulator)
        assert puts > 0  # the load above was counted: the counter sees uploads
        result = run_keeptar(
            "push", "push/app:9", "--source", source.uuid, "--project-uuid", target, "--json"
        )
        assert result.returncode == 0, result.stderr.decode()
        doc = json.loads(result.stdout)
        assert keep_puts(emulator) == puts
        assert doc["from"] == "collection" and doc["project_uuid"] == target
        assert doc["portable_data_hash"] == source.portable_data_hash
        copy = store.get_collection(doc["collection"])
        assert copy["owner_uuid"] == target
        assert sorted(link["name"] for link in links_in(store, target)) == [
            "push/app:9",
            source.image_id,
        ]


def _one_line_error(result: Any, code: int, *needles: str) -> str:
    err: str = result.stderr.decode()
    assert result.returncode == code, err
    assert err.startswith("keeptar: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert result.stdout == b""
    return err


def test_command_errors_are_one_line_with_their_exit_code(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project = new_project(backend, request)
    first = load(backend, tmp_path, project, "err/app:1")
    second = load(backend, tmp_path, project, "err/app:2")
    before = snapshot(backend, project)

    _one_line_error(cli("tag", "err/none:1", "err/x"), 6, "no image 'err/none:1'")
    _one_line_error(cli("push", "err/none:1", "--source", "zzzzz-4zz18-000000000000000"), 6)
    prefix = backend.server_facts().uuid_prefix
    missing = f"{prefix}-j7d0g-nosuchproject00"
    _one_line_error(
        cli("tag", "err/app:1", "err/x", "--project-uuid", missing), 6, missing, "not found"
    )
    _one_line_error(cli("untag", "err/app:1", "--project-uuid", missing), 6, missing)
    _one_line_error(cli("untag", "err/app:7", "--project-uuid", project), 6, "err/app:7")
    _one_line_error(cli("tag", "err/app:1", "Bad/Name"), 2, "not a valid image name")
    _one_line_error(
        cli("push", "err/app:1", "--project-uuid", "source", "--source", "not-a-collection"), 6
    )

    # An ID prefix two images share: usage error listing both.
    shared = "abcdef0123"
    for result, tail in ((first, "1"), (second, "2")):
        backend.create_link(
            link_class=HASH,
            name=f"sha256:{shared}{tail * 54}",
            head_uuid=result.uuid,
            owner_uuid=project,
            properties={},
        )
    err = _one_line_error(cli("tag", shared, "err/x"), 2, "ambiguous", "2 images")
    assert f"{shared}11" in err and f"{shared}22" in err
    before = snapshot(backend, project)

    # A SOURCE collection that is not an image.
    text = backend.create_collection(
        manifest_text=". d41d8cd98f00b204e9800998ecf8427e+0 0:0:notes.txt\n",
        name=f"notes {uuidlib.uuid4()}",
        owner_uuid=project,
        properties={},
    )
    _one_line_error(
        cli("tag", text["uuid"], "err/x"), 3, "not a Docker image", "notes.txt", "keeptar load"
    )
    _one_line_error(cli("push", "err/x", "--source", text["portable_data_hash"]), 3)
    assert snapshot(backend, project)[0][1] == before[0][1]  # no link made by any refusal

    if backend.kind == "arvados":
        emu = request.getfixturevalue("emulator")
        _one_line_error(
            cli("tag", "err/app:1", "err/x", "--project-uuid", emu.bob.uuid), 7, "cannot write"
        )
        _one_line_error(cli("untag", "err/app:1", "--project-uuid", emu.bob.uuid), 7)


def test_find_or_create_image_wants_the_sources_pdh(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The project already holds the same image under another PDH (the same bytes cut
    into other segments): that one is not the source's collection, so a copy is made."""
    project, target = new_project(backend, request), new_project(backend, request)
    source = load(backend, tmp_path, project, "pdh/app:1")
    stream, *locators_and_files = backend.get_collection(source.uuid)["manifest_text"].split()
    *locators, file_token = locators_and_files
    start, size, name = file_token.split(":", 2)
    assert start == "0" and int(size) > 10
    recut = f"{stream} {' '.join(locators)} 0:10:{name} 10:{int(size) - 10}:{name}\n"
    other = backend.create_collection(
        manifest_text=recut, name="recut", owner_uuid=target, properties={}
    )
    assert other["portable_data_hash"] != source.portable_data_hash
    backend.create_link(
        link_class=HASH,
        name=source.image_id,
        head_uuid=other["uuid"],
        owner_uuid=target,
        properties={},
    )
    record = find_or_create_image(backend, target, source.uuid, "pdh/app:2")
    assert record["uuid"] != other["uuid"]
    assert record["portable_data_hash"] == source.portable_data_hash
    assert record["owner_uuid"] == target


def test_images_by_hash_prefix_and_quiet(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project = new_project(backend, request)
    first = load(backend, tmp_path, project, "q/app:1")
    load(backend, tmp_path, project, "q/app:2")
    hexpart = first.image_id.removeprefix("sha256:")
    for prefix in (hexpart[:12], first.image_id[:20]):
        listed = cli_json("images", prefix, "--project-uuid", project)
        assert [(row["repo"], row["tag"], row["collection"]) for row in listed] == [
            ("q/app", "1", first.uuid)
        ]
    quiet = cli("images", "-q", "q/app:1", "--project-uuid", project)
    assert quiet.returncode == 0 and quiet.stdout.decode() == f"{first.image_id}\n"
    every = cli("images", "--quiet", "--project-uuid", project)
    ids = [m.image_id for m in search_images_by_name(backend, "q/app", project)]
    assert every.stdout.decode().split() == ids and len(ids) == 2
    assert cli("images", "-q", "0" * 40, "--project-uuid", project).stdout == b""


def test_push_from_the_docker_daemon_then_from_keep(
    local_home: Path, dockerd: str, request: pytest.FixtureRequest
) -> None:
    import os

    from keeptar.backends.embedded import EmbeddedBackend

    env = {**os.environ, "DOCKER_HOST": dockerd}
    reference = docker_load(env, APP, "kt/app:2.0", rename="kt/push")
    image_id = docker_image_id(env, reference)
    repo = reference.removesuffix(":v1")
    backend = EmbeddedBackend(local_home)
    home = backend.current_user().uuid

    first = cli_json("push", f"{repo}:v1")
    assert first["from"] == "docker" and first["image_id"] == image_id
    assert first["project_uuid"] == home
    assert sorted((link["link_class"], link["name"]) for link in links_in(backend, home)) == [
        (HASH, image_id),
        (NAME, f"{repo}:v1"),
    ]
    before = snapshot(backend, home)
    second = cli_json("push", f"{repo}:v1")  # now in Keep: no docker save, nothing new
    assert second["from"] == "keep" and second["created"] == []
    assert second["collection"] == first["collection"]
    assert snapshot(backend, home) == before
    target = new_project(backend, request)
    copied = cli_json("push", f"{repo}:v1", "--project-uuid", target)
    assert copied["from"] == "keep" and copied["portable_data_hash"] == first["portable_data_hash"]
    assert len(copied["created"]) == 3
    missing = cli("push", f"{repo}:v2")
    _one_line_error(missing, 6, f"no image {repo}:v2 in Keep")


def test_load_project_uuid_source_is_the_collections_project(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    project = new_project(backend, request)
    source = load(backend, tmp_path, project, "src/app:1")
    loaded = cli_json("load", source.uuid, "--project-uuid", "source", "--tag", "src/app:2")
    assert loaded["uuid"] == source.uuid  # registered in place, in the source's project
    names = {link["name"] for link in links_in(backend, project)}
    assert names == {"src/app:1", "src/app:2", source.image_id}
    home = backend.current_user().uuid
    assert not [link for link in links_in(backend, home) if link["head_uuid"] == source.uuid]
    _one_line_error(
        cli("load", str(APP), "--project-uuid", "source"), 2, "needs a collection SOURCE"
    )


def test_readme_documents_the_commands_and_its_catalog_example_runs(
    local_home: Path, tmp_path: Path
) -> None:
    import re

    from keeptar.backends.embedded import EmbeddedBackend
    from keeptar.cli import app

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for command in app.registered_commands:
        assert f"### `keeptar {command.name} " in readme or f"### `keeptar {command.name}`" in (
            readme
        ), command.name
    section = readme[readme.index("## Python API") :]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None and "find_or_create_image" in example.group(1)
    backend = EmbeddedBackend(local_home)
    source = load(backend, tmp_path, backend.current_user().uuid, "myorg/tool:1.0")
    exec(compile(example.group(1), "README.md", "exec"), {})
    names = {link["name"] for link in backend.list_links([["head_uuid", "=", source.uuid]])}
    assert names == {"myorg/tool:1.0", "myorg/tool:stable", source.image_id}


def test_search_follows_migration_links_as_the_server_does(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A v1 image (``<hex>.tar``, refused by a v2-only cluster) with a migration link
    owned by the system user resolves to the migrated v2 collection."""
    assert backend.server_facts().docker_image_formats == ("v2",)
    project = new_project(backend, request)
    new = load(backend, tmp_path, project, "mig/app:2")
    stream, *tokens = backend.get_collection(new.uuid)["manifest_text"].split()
    *locators, file_token = tokens
    size = file_token.split(":", 2)[1]
    v1_id = uuidlib.uuid4().hex * 2  # a name only: the server looks at nothing else
    old = backend.create_collection(
        manifest_text=f"{stream} {' '.join(locators)} 0:{size}:{v1_id}.tar\n",
        name=f"v1 {v1_id[:12]}",
        owner_uuid=project,
        properties={},
    )
    for link_class, name in ((HASH, v1_id), (NAME, "mig/app:1")):
        backend.create_link(
            link_class=link_class,
            name=name,
            head_uuid=old["uuid"],
            owner_uuid=project,
            properties={"image_timestamp": "2016-01-01T00:00:00Z"},
        )
    as_stored = [(old["uuid"], "mig/app", "1", v1_id)]
    assert rows(search_images_by_name(backend, "mig/app:1", project)) == as_stored
    _, viewer = add_migration_link(
        backend, request, old["portable_data_hash"], new.portable_data_hash
    )
    if backend.kind != "local":
        # Alice cannot read the system user's link: the row stays as stored.
        assert rows(search_images_by_name(backend, "mig/app:1", project)) == as_stored
        from arvados_emulator import find_all_for_docker_image

        emu = request.getfixturevalue("emulator")
        server = find_all_for_docker_image(emu, emu.admin, "mig/app:1")
        assert [c["uuid"] for c in server] == [new.uuid]
    found = search_images_by_name(viewer, "mig/app:1", project)
    assert rows(found) == [(new.uuid, "mig/app", "1", new.image_id)]
    assert found[0].portable_data_hash == new.portable_data_hash
    by_hash = search_images_by_hash(viewer, v1_id[:16], project)
    assert [m.collection_uuid for m in by_hash] == [new.uuid]
