"""`keeptar load` and `keeptar images`, end to end, on both backends and with the real SDK."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from archive_edit import with_new_config
from conftest import (
    arv_keepdocker,
    docker_image_id,
    docker_load,
    fixture_path,
    load_truth,
    run_keeptar,
)
from keeptar.errors import ArchiveError, BackendError, ConflictError, NotFoundError, UsageError
from keeptar.keep import parse_manifest
from keeptar.keep.blocks import read_file_range
from keeptar.load import SourceKind, detect_source, load_image

TRUTH = load_truth()
APP = fixture_path("docker-v2-app.tar")
APP_ID = TRUTH["docker-v2-app.tar"]["images"][0]["id"]
APP_CREATED = TRUTH["docker-v2-app.tar"]["images"][0]["created"]
V2_NAME = re.compile(r"^(sha256:)[0-9A-Fa-f]{64}\.tar$")  # Collection.find_all_for_docker_image
V1_NAME = re.compile(r"^[0-9A-Fa-f]{64}\.tar$")


def stored_bytes(backend: Any, uuid: str) -> tuple[str, bytes]:
    record = backend.get_collection(uuid)
    (item,) = parse_manifest(record["manifest_text"])
    data = read_file_range(backend.get_block, record["manifest_text"], item.path, 0, item.size)
    return item.path, data


def links_on(backend: Any, uuid: str) -> list[tuple[str, str]]:
    return sorted(
        (link["link_class"], link["name"])
        for link in backend.list_links([["head_uuid", "=", uuid]])
    )


def image_collections(backend: Any, image_id: str) -> set[str]:
    heads = {
        link["head_uuid"]
        for link in backend.list_links(
            [["link_class", "=", "docker_image_hash"], ["name", "=", image_id]]
        )
    }
    return {c["uuid"] for c in backend.list_collections([["uuid", "in", sorted(heads)]])}


def keep_puts(emulator: Any) -> int:
    """Blocks PUT to the emulator's keepstore so far (uploads, successful or not)."""
    return sum(1 for method, path in emulator.requests if method == "PUT" and path == "/keep/")


def counts(backend: Any) -> tuple[int, int]:
    return len(list(backend.list_collections([]))), len(list(backend.list_links([])))


# ---- both backends ------------------------------------------------------------------------


def test_load_registers_like_arv_keepdocker(backend: Any) -> None:
    result = load_image(backend, str(APP), force=True)
    assert result.image_id == APP_ID and result.created == APP_CREATED
    assert result.repo_tag == "kt/app:2.0" and result.format == "docker-v2"
    name, data = stored_bytes(backend, result.uuid)
    assert name == f"{APP_ID}.tar" and V2_NAME.match(name)
    assert data == APP.read_bytes()
    record = backend.get_collection(result.uuid)
    assert record["name"].startswith(f"Docker image kt app:2.0 {APP_ID[:12]}")
    assert record["properties"] == {"docker-image-repo-tag": "kt/app:2.0"}
    assert record["portable_data_hash"] == result.portable_data_hash
    assert "sha256\\072" in record["manifest_text"]
    assert links_on(backend, result.uuid) == [
        ("docker_image_hash", APP_ID),
        ("docker_image_repo+tag", "kt/app:2.0"),
    ]
    for link in backend.list_links([["head_uuid", "=", result.uuid]]):
        assert link["properties"] == {"image_timestamp": APP_CREATED}


@pytest.mark.parametrize("suffix", ["gz", "zst", "xz", "bz2"])
def test_compressed_input_is_stored_decompressed(backend: Any, suffix: str) -> None:
    result = load_image(backend, str(fixture_path(f"docker-v2-app.tar.{suffix}")), force=True)
    assert stored_bytes(backend, result.uuid)[1] == APP.read_bytes()


def test_loading_again_creates_no_duplicates(backend: Any) -> None:
    first = load_image(backend, str(fixture_path("docker-v2-untagged.tar")), tag="kt/again")
    before = counts(backend)
    again = load_image(backend, str(fixture_path("docker-v2-untagged.tar")), tag="kt/again")
    assert again.uuid == first.uuid and again.reused
    assert counts(backend) == before
    # From a pipe too (the image is only known after the pass; the upload is content-addressed).
    with open(fixture_path("docker-v2-untagged.tar"), "rb") as stream:
        piped = _load_stdin(backend, stream, "kt/again")
    assert piped.uuid == first.uuid and counts(backend) == before
    assert first.repo_tag == "kt/again:latest"


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_load_that_registers_first_is_reused_not_duplicated(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    """Two loads of one image at once: the later one reuses the first's collection."""
    path = unique_image(fixture_path("docker-v2-untagged.tar"), tmp_path)
    others: list[Any] = []
    put_block = backend.put_block

    def put_block_then_let_another_load_finish(data: Any, *, md5: str | None = None) -> str:
        locator: str = put_block(data, md5=md5)
        if not others:  # the other load runs start to finish during this one's upload
            others.append(load_image(type(backend)(*backend_args(backend)), str(path)))
        return locator

    monkeypatch.setattr(backend, "put_block", put_block_then_let_another_load_finish)
    if source == "file":
        result = load_image(backend, str(path))
    else:
        with open(path, "rb") as stream:
            result = _load_stdin(backend, stream, "kt/race")
    (other,) = others
    assert result.uuid == other.uuid and result.reused
    assert image_collections(backend, other.image_id) == {other.uuid}


def unique_image(archive: Path, tmp_path: Path) -> Path:
    """A copy of a docker-v2 *archive* whose image (config, so ID) no other test has."""
    import uuid

    def comment(config: dict[str, Any]) -> None:
        config["comment"] = f"keeptar test {uuid.uuid4()}"

    return with_new_config(archive, tmp_path / "unique.tar", comment)


def backend_args(backend: Any) -> tuple[Any, ...]:
    """Arguments that open a second handle on the same store as *backend*."""
    return (backend.home,) if backend.kind == "local" else ()


def _load_stdin(backend: Any, stream: Any, tag: str) -> Any:
    saved = sys.stdin
    sys.stdin = type("Stdin", (), {"buffer": stream, "isatty": lambda self: False})()  # type: ignore[assignment]
    try:
        return load_image(backend, "-", tag=tag)
    finally:
        sys.stdin = saved


def test_force_uploads_and_registers_again(backend: Any) -> None:
    first = load_image(backend, str(fixture_path("buildah-docker-archive.tar")))
    forced = load_image(backend, str(fixture_path("buildah-docker-archive.tar")), force=True)
    assert forced.uuid != first.uuid and not forced.reused


def test_multi_image_archives_need_a_choice(backend: Any) -> None:
    two = str(fixture_path("docker-v2-two-images.tar"))
    with pytest.raises(UsageError, match="holds 2 images; choose one with the image argument"):
        load_image(backend, two)
    ids = {img["id"]: img for img in TRUTH["docker-v2-two-images.tar"]["images"]}
    base = next(
        d for d in TRUTH["docker-v2-two-images.tar"]["docker"] if "kt/base:v1" in d["repo_tags"]
    )
    by_tag = load_image(backend, two, image="kt/base:v1")
    assert by_tag.image_id == base["id"] and by_tag.repo_tag == "kt/base:v1"
    other = next(i for i in ids if i != base["id"])
    by_id = load_image(backend, two, image=other[7:19])
    assert by_id.image_id == other


def test_v1_images_and_the_format_check(backend: Any) -> None:
    v1 = str(fixture_path("docker-v1-app.tar"))
    before = counts(backend)
    with pytest.raises(ConflictError, match="keeptar migrate19"):
        load_image(backend, v1)
    assert counts(backend) == before
    result = load_image(backend, v1, force_image_format=True)
    top = TRUTH["docker-v1-app.tar"]["v1_tops"][0]
    assert result.image_id == top and result.file_name == f"{top}.tar"
    assert V1_NAME.match(stored_bytes(backend, result.uuid)[0])


def test_bad_archives_leave_nothing(backend: Any, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar"
    cut.write_bytes(APP.read_bytes()[:9000])
    before = counts(backend)
    with pytest.raises(ArchiveError):
        load_image(backend, str(cut))
    plain = tmp_path / "plain.tar"
    subprocess.run(
        ["tar", "cf", str(plain), "-C", str(Path(__file__).parent), "conftest.py"], check=True
    )
    with pytest.raises(ArchiveError, match="not a container image archive"):
        load_image(backend, str(plain))
    assert counts(backend) == before


def test_project_must_exist_and_be_writable(backend: Any) -> None:
    prefix = backend.server_facts().uuid_prefix
    with pytest.raises(NotFoundError, match="project"):
        load_image(backend, str(APP), project_uuid=f"{prefix}-j7d0g-nosuchproject00")
    for malformed in ("bogus", f"{prefix}-4zz18-000000000000000", f"{prefix}-j7d0g-short"):
        with pytest.raises(UsageError, match="not a project or user UUID"):
            load_image(backend, str(APP), project_uuid=malformed)


def test_embedded_projects_hold_images(local_home: Path) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(local_home)
    project = backend.create_project("images")
    with pytest.raises(ConflictError, match="already exists"):
        backend.create_project("images")
    loaded = load_image(backend, str(APP), project_uuid=project["uuid"])
    assert backend.get_collection(loaded.uuid)["owner_uuid"] == project["uuid"]
    assert {
        link["owner_uuid"] for link in backend.list_links([["head_uuid", "=", loaded.uuid]])
    } == {project["uuid"]}


def test_collection_source_reuses_blocks(backend: Any) -> None:
    loaded = load_image(backend, str(fixture_path("skopeo-docker-archive.tar")), tag="kt/src:1")
    pdh = loaded.portable_data_hash
    again = load_image(backend, pdh, tag="kt/src:2")  # registered, not re-uploaded
    assert again.image_id == loaded.image_id and again.reused
    assert ("docker_image_repo+tag", "kt/src:2") in links_on(backend, again.uuid)


def test_compressed_collection_file_is_refused_from_its_first_block(
    backend: Any, tmp_path: Path
) -> None:
    from keeptar.keep import single_file_manifest
    from keeptar.keep.blocks import BlockWriter

    data = gzip.compress(big_layer_archive(tmp_path / "one.tar", 1).read_bytes(), 1)
    with BlockWriter(backend.put_block, block_size=1 << 16) as writer:
        writer.write(data)
        stored = writer.finish()
    record = backend.create_collection(
        manifest_text=single_file_manifest("image.tar", stored.locators, stored.size),
        name=f"gz {os.urandom(3).hex()}",
        owner_uuid=backend.current_user().uuid,
        properties={},
    )
    fetched: list[str] = []
    original = backend.get_block
    backend.get_block = lambda locator: fetched.append(locator) or original(locator)
    try:
        with pytest.raises(UsageError, match="gzip-compressed"):
            load_image(backend, record["uuid"])
    finally:
        backend.get_block = original
    assert len(stored.locators) > 5 and len(fetched) == 1


def test_detect_source(tmp_path: Path) -> None:
    assert detect_source(str(APP)) == (SourceKind.FILE, str(APP))
    assert detect_source(None, stdin_is_tty=False) == (SourceKind.STDIN, "-")
    pdh = "d41d8cd98f00b204e9800998ecf8427e+0"
    assert detect_source(pdh) == (SourceKind.COLLECTION, pdh)
    assert detect_source("zzzzz-4zz18-0123456789abcde")[0] is SourceKind.COLLECTION
    with pytest.raises(UsageError, match="--from docker"):
        detect_source("ubuntu:22.04")
    with pytest.raises(UsageError, match="give an image archive"):
        detect_source(None, stdin_is_tty=True)
    assert detect_source("ubuntu:22.04", SourceKind.DOCKER) == (SourceKind.DOCKER, "ubuntu:22.04")
    mounted = tmp_path / "keep" / "by_id" / "0123456789abcdef0123456789abcdef+123" / "x.tar"
    mounted.parent.mkdir(parents=True)
    mounted.write_bytes(b"")
    assert detect_source(str(mounted))[0] is SourceKind.ARV_MOUNT


# ---- on the emulator, with the real SDK ------------------------------------------------


def keeptar(
    emulator: Any,
    *args: str,
    account: Any = None,
    input: bytes | None = None,
    stdin: Any = None,
    **env: str,
) -> subprocess.CompletedProcess[bytes]:
    """Run keeptar against *emulator* as *account* (admin by default)."""
    return run_keeptar(
        *args,
        input=input,
        stdin=stdin,
        env={**emulator.env(account), "KEEPTAR_RETRIES": "2", **env},
    )


def test_interop_with_the_sdk(emulator: Any, tmp_path: Path) -> None:
    from arvados.commands.keepdocker import list_images_in_arv

    source = fixture_path("docker-v2-app.tar.zst")
    result = keeptar(
        emulator,
        "load",
        "--json",
        "--force",
        "--tag",
        "kt/interop:1",
        str(source),
        account=emulator.alice,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {
        "uuid",
        "portable_data_hash",
        "image_id",
        "repo_tag",
        "file_name",
        "format",
        "created",
    }
    api = emulator.api(emulator.alice)
    images = list_images_in_arv(api, 3, "kt/interop", "1")
    assert images[0][0] == doc["uuid"]
    assert images[0][1]["dockerhash"] == APP_ID
    assert images[0][1]["timestamp"].isoformat().startswith(APP_CREATED[:19])
    listing = subprocess.run(
        ["arv-keepdocker"],
        env={**os.environ, **emulator.env(emulator.alice)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    row = next(
        line.split() for line in listing.stdout.splitlines() if line.startswith("kt/interop")
    )
    assert row[:4] == ["kt/interop", "1", APP_ID[:12], doc["uuid"]]
    out = tmp_path / "got.tar"
    get = subprocess.run(
        ["arv-get", f"{doc['uuid']}/{doc['file_name']}", str(out)],
        env={**os.environ, **emulator.env(emulator.alice)},
        capture_output=True,
        timeout=120,
    )
    assert get.returncode == 0, get.stderr
    assert out.read_bytes() == APP.read_bytes()  # the decompressed input
    assert V2_NAME.match(doc["file_name"])


def test_cli_prints_the_uuid_and_images_lists_it(emulator: Any) -> None:
    loaded = keeptar(
        emulator,
        "load",
        "--tag",
        "kt/cli:7",
        "--project-uuid",
        emulator.alice_project["uuid"],
        str(fixture_path("crane-app.tar")),
        account=emulator.alice,
    )
    assert loaded.returncode == 0, loaded.stderr
    uuid = loaded.stdout.decode().strip()
    assert re.fullmatch(r"zzzzz-4zz18-[a-z0-9]{15}", uuid)
    listed = keeptar(emulator, "images", "--json", "kt/cli:7", account=emulator.alice)
    rows = json.loads(listed.stdout)
    assert rows[0]["collection"] == uuid and rows[0]["repo"] == "kt/cli" and rows[0]["tag"] == "7"
    assert rows[0]["image_id"] == TRUTH["crane-app.tar"]["images"][0]["id"]
    table = keeptar(emulator, "images", account=emulator.alice).stdout.decode().splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "COLLECTION", "CREATED"]
    assert any(
        line.split()[:4] == ["kt/cli", "7", rows[0]["image_id"][7:19], uuid] for line in table[1:]
    )


def test_stdin_upload_and_reuse_across_projects(emulator: Any) -> None:
    data = gzip.compress(fixture_path("podman-two-images.tar").read_bytes())
    first = keeptar(
        emulator,
        "load",
        "--json",
        "--image",
        "localhost/kt/buildah:v2",
        input=data,
        account=emulator.alice,
    )
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    puts = keep_puts(emulator)
    again = keeptar(
        emulator,
        "load",
        "--json",
        "--image",
        "localhost/kt/buildah:v2",
        "--project-uuid",
        emulator.alice_project["uuid"],
        str(fixture_path("podman-two-images.tar")),
        account=emulator.alice,
    )
    assert again.returncode == 0, again.stderr
    copy = json.loads(again.stdout)
    assert copy["uuid"] != doc["uuid"] and copy["portable_data_hash"] == doc["portable_data_hash"]
    assert keep_puts(emulator) == puts  # nothing re-uploaded


def test_collection_by_pdh_from_arv_put(emulator: Any) -> None:
    env = {**os.environ, **emulator.env(emulator.alice)}
    put = subprocess.run(
        [
            "arv-put",
            "--no-resume",
            "--no-cache",
            "--name",
            f"raw {os.urandom(3).hex()}",
            str(fixture_path("docker-v2-untagged.tar")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert put.returncode == 0, put.stderr
    pdh = (
        emulator.api(emulator.alice)
        .collections()
        .get(uuid=put.stdout.strip())
        .execute()["portable_data_hash"]
    )
    puts = keep_puts(emulator)
    result = keeptar(
        emulator, "load", "--json", "--force", "--tag", "kt/frompdh", pdh, account=emulator.alice
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["image_id"] == TRUTH["docker-v2-untagged.tar"]["images"][0]["id"]
    assert keep_puts(emulator) == puts
    got = subprocess.run(
        ["arv-get", f"{doc['uuid']}/{doc['file_name']}", "-"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert got.stdout == fixture_path("docker-v2-untagged.tar").read_bytes()


def test_arv_mount_path_reuses_blocks(emulator: Any, tmp_path: Path) -> None:
    """arv-mount's layout as a plain directory tree, for machines without FUSE (the real
    arv-mount is in test_arv_mount.py): a collection directory with the
    `.arvados#collection` record arv-mount serves, holding the file."""
    from keeptar.backends.arvados import ArvadosBackend

    with emulator.environment(emulator.alice):
        backend = ArvadosBackend()
        loaded = load_image(
            backend,
            str(fixture_path("skopeo-oci-archive.tar")),
            force=True,
            force_image_format=True,
            tag="kt/oci",
        )
    record = backend.get_collection(loaded.uuid)
    folder = tmp_path / "mnt" / "home" / "Alice project" / "my image"
    folder.mkdir(parents=True)
    (folder / ".arvados#collection").write_text(
        json.dumps({"uuid": record["uuid"], "portable_data_hash": record["portable_data_hash"]})
    )
    (folder / loaded.file_name).write_bytes(fixture_path("skopeo-oci-archive.tar").read_bytes())
    puts = keep_puts(emulator)
    result = keeptar(
        emulator,
        "load",
        "--json",
        "--force",
        "--tag",
        "kt/mounted",
        str(folder / loaded.file_name),
        account=emulator.alice,
    )
    assert result.returncode == 0, result.stderr
    assert keep_puts(emulator) == puts  # no bytes copied
    assert json.loads(result.stdout)["portable_data_hash"] == record["portable_data_hash"]


def test_v1_refused_on_a_v2_only_cluster(emulator: Any) -> None:
    result = keeptar(
        emulator, "load", str(fixture_path("v1-moby-emptylayer.tar")), account=emulator.alice
    )
    assert result.returncode == 7
    assert b"migrate19" in result.stderr and len(result.stderr.splitlines()) == 1


def test_project_that_is_not_visible(emulator: Any) -> None:
    result = keeptar(
        emulator,
        "load",
        "--project-uuid",
        emulator.bob_project["uuid"],
        str(APP),
        account=emulator.alice,
    )
    assert result.returncode == 6, result.stderr  # Alice cannot see Bob's project at all
    assert b"not found" in result.stderr and b"Traceback" not in result.stderr


def test_project_that_is_read_only(emulator: Any) -> None:
    from arvados_emulator import Emulator

    with Emulator() as own:  # a cluster of its own: the share must not leak into other tests
        own.share(own.bob_project["uuid"], own.alice, "can_read")
        result = keeptar(
            own, "load", "--project-uuid", own.bob_project["uuid"], str(APP), account=own.alice
        )
        assert result.returncode == 7, result.stderr
        assert b"cannot write to project" in result.stderr
        assert [c for c in own.tables["collections"].values()] == []
        assert [
            link for link in own.tables["links"].values() if link["link_class"] != "permission"
        ] == []


@pytest.mark.parametrize("where", ["keepstore", "collections", "links"])
def test_failures_leave_nothing_and_rerun_is_clean(emulator: Any, where: str) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    source = str(fixture_path("buildah-docker-archive.tar"))
    tag = f"kt/fail-{where}:1"
    path = {
        "keepstore": "/keep/",
        "collections": "/arvados/v1/collections",
        "links": "/arvados/v1/links",
    }[where]
    method = "PUT" if where == "keepstore" else "POST"
    with emulator.environment(emulator.alice):
        backend = ArvadosBackend(num_retries=1)
        image_id = TRUTH["buildah-docker-archive.tar"]["images"][0]["id"]
        before_images = image_collections(backend, image_id)
        before_tags = list(backend.list_links([["name", "=", tag]]))
        fault = emulator.inject(method, path, status=500, times=1000)
        if where == "links":  # let the hash link through: the repo+tag link fails
            fault.times = 0
            calls = [0]
            original = emulator.take_fault

            def second_link_fails(m: str, p: str) -> Any:
                if m == "POST" and p == path:
                    calls[0] += 1
                    if calls[0] >= 2:
                        from arvados_emulator import Fault

                        return Fault(m, p, status=500)
                return original(m, p)

            emulator.take_fault = second_link_fails
        try:
            with pytest.raises(BackendError):
                load_image(backend, source, tag=tag, force=True)
        finally:
            fault.times = 0
            emulator.take_fault = type(emulator).take_fault.__get__(emulator)
        assert image_collections(backend, image_id) == before_images
        assert list(backend.list_links([["name", "=", tag]])) == before_tags
        ok = load_image(backend, source, tag=tag, force=True)
        again = load_image(backend, source, tag=tag)
        assert again.uuid == ok.uuid
        assert len(list(backend.list_links([["name", "=", tag]]))) == 1


def test_a_stored_image_missing_a_block_is_repaired_not_reused(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = unique_image(fixture_path("docker-v2-app.tar"), tmp_path)
    first = load_image(backend, str(path))
    (item,) = parse_manifest(backend.get_collection(first.uuid)["manifest_text"])
    (segment,) = item.segments
    md5 = segment.locator[:32]
    if backend.kind == "local":
        block_files = [backend.home / "keep" / md5[:3] / md5]
    else:  # every replica, one on each keepstore
        block_files = [d / md5 for d in request.getfixturevalue("emulator").block_dirs]
    for block_file in block_files:
        block_file.unlink()  # a disk fault, or a block deleted by hand
    assert not backend.has_block(segment.locator)
    again = load_image(backend, str(path))
    assert backend.has_block(segment.locator)  # uploaded again
    assert again.uuid == first.uuid  # the repaired collection, not a duplicate
    assert stored_bytes(backend, first.uuid)[1] == path.read_bytes()


def test_a_file_changed_during_the_load_is_not_registered(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = unique_image(fixture_path("docker-v2-app.tar"), tmp_path)
    put_block = backend.put_block

    def put_block_while_the_file_changes(data: Any, *, md5: str | None = None) -> str:
        with open(path, "ab") as archive:
            archive.write(bytes(1024))  # e.g. `docker save -o` rewriting it
        locator: str = put_block(data, md5=md5)
        return locator

    monkeypatch.setattr(backend, "put_block", put_block_while_the_file_changes)
    before = counts(backend)
    with pytest.raises(ArchiveError, match="changed while it was being loaded"):
        load_image(backend, str(path))
    assert counts(backend) == before
    monkeypatch.undo()
    assert load_image(backend, str(path)).image_id.startswith("sha256:")


def _rewrite_config_in_place(path: Path) -> None:
    """Change one byte of the config, same size, and put the mtime back (ns precision)."""
    status = os.stat(path)
    with tarfile.open(path) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        member = tar.getmember(entry["Config"])
        config = tar.extractfile(member).read()  # type: ignore[union-attr]
    at = config.index(b"keeptar test ") + len(b"keeptar test ")
    flipped = b"0" if config[at : at + 1] != b"0" else b"1"
    with open(path, "r+b") as archive:
        archive.seek(member.offset_data + at)
        archive.write(flipped)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        status.st_size,
        status.st_mtime_ns,
        status.st_ino,
    )


@pytest.mark.parametrize("timestamps", ["fine", "coarse"])
def test_a_config_rewritten_in_place_is_never_registered_under_the_old_id(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, timestamps: str
) -> None:
    """Issue 8 §2: same size, mtime put back; the registered ID must match the stored bytes.

    keeptar checks each stored block against the bytes the metadata pass parsed, so
    the load is refused and nothing is registered.  "coarse" also blinds the cheap
    (stat) check, as on a filesystem whose change times are too coarse to see it: the
    stored bytes alone must then catch it.
    """
    import keeptar.load

    path = unique_image(fixture_path("docker-v2-app.tar"), tmp_path)
    real_store_file = keeptar.load.store_file

    def store_after_a_rewrite(*args: Any, **kwargs: Any) -> Any:
        _rewrite_config_in_place(path)  # after the metadata pass, before the bytes are read
        return real_store_file(*args, **kwargs)

    monkeypatch.setattr(keeptar.load, "store_file", store_after_a_rewrite)
    if timestamps == "coarse":
        monkeypatch.setattr(keeptar.load, "_identity", lambda info: (info.st_ino, info.st_size))
    before = counts(backend)
    with pytest.raises(ArchiveError, match="changed while it was being loaded"):
        load_image(backend, str(path))
    assert counts(backend) == before  # nothing registered


def test_a_layer_rewritten_in_place_is_caught_by_its_change_time(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 8 §2, the cheap check: a layer byte changed in place, same size, mtime put
    back.  Without --verify no layer is hashed, so only the change time shows it."""
    import keeptar.load

    layer_data = os.urandom(8 << 20)  # large enough that the metadata pass skips it
    path = with_new_config(APP, tmp_path / "layer.tar", layers={0: layer_data})
    with tarfile.open(path) as tar:
        (entry,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = tar.getmember(entry["Layers"][0])
    assert layer.size == len(layer_data)
    real_store_file = keeptar.load.store_file

    def store_after_a_rewrite(*args: Any, **kwargs: Any) -> Any:
        status = os.stat(path)
        with open(path, "r+b") as archive:
            archive.seek(layer.offset_data + layer.size // 2)
            old = archive.read(1)
            archive.seek(-1, os.SEEK_CUR)
            archive.write(bytes([old[0] ^ 0xFF]))
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
        return real_store_file(*args, **kwargs)

    monkeypatch.setattr(keeptar.load, "store_file", store_after_a_rewrite)
    before = counts(backend)
    with pytest.raises(ArchiveError, match="changed while it was being loaded"):
        load_image(backend, str(path))
    assert counts(backend) == before


def _feed(path: Path, target: str | int) -> Any:
    """A thread writing *path* into a FIFO (by name) or a pipe's write end (by fd)."""
    import threading

    def write() -> None:
        with open(target, "wb") as out:
            out.write(path.read_bytes())

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("fixture", ["docker-v2-app.tar", "docker-v2-app.tar.gz"])
def test_named_pipes_are_read_as_streams(backend: Any, tmp_path: Path, fixture: str) -> None:
    """Issue 8 §4: `load FIFO` and `load <(cat x.tar)` (a /dev/fd/N path) read the stream."""
    archive = fixture_path(fixture)
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    assert detect_source(str(fifo)) == (SourceKind.FILE, str(fifo))
    assert detect_source(str(fifo), SourceKind.FILE) == (SourceKind.FILE, str(fifo))
    writer = _feed(archive, str(fifo))
    by_name = load_image(backend, str(fifo), force=True)
    writer.join(timeout=60)
    read_end, write_end = os.pipe()
    try:
        writer = _feed(archive, write_end)
        by_fd = load_image(backend, f"/dev/fd/{read_end}", force=True)
        writer.join(timeout=60)
    finally:
        os.close(read_end)
    plain = gzip.decompress(archive.read_bytes()) if fixture.endswith(".gz") else None
    for result in (by_name, by_fd):
        assert result.image_id == APP_ID
        assert stored_bytes(backend, result.uuid)[1] == (plain or archive.read_bytes())


def test_cli_loads_a_process_substitution(local_home: Path) -> None:
    """The shell's own `<(…)`, end to end."""
    result = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m keeptar load --json <(cat "$1")', "-", str(APP)],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["image_id"] == APP_ID


def test_a_pipe_that_never_ends_is_not_stored_forever(backend: Any) -> None:
    """Issue 8 §4: an archive then endless zeros: give up with an error, register nothing."""
    import threading

    writer = subprocess.Popen(
        ["sh", "-c", 'cat "$1"; exec cat /dev/zero', "-", str(APP)], stdout=subprocess.PIPE
    )
    watchdog = threading.Timer(60, writer.kill)  # today's code reads on forever
    watchdog.start()
    before = counts(backend)
    try:
        with pytest.raises(ArchiveError, match="after the end of the archive"):
            _load_stdin(backend, writer.stdout, "kt/endless")
    finally:
        watchdog.cancel()
        writer.kill()
        writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()
    assert counts(backend) == before


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_full_disk_is_a_clean_backend_error(
    local_home: Path, tmp_path: Path, source: str
) -> None:
    """Block writes that fail (here: a file size limit, as a full disk would) exit 5."""
    import resource

    # The archive padded past the limit with zero blocks (as tar itself may pad); the
    # limit stays above SQLite's 32 KiB shared-memory file.
    path = tmp_path / "padded.tar"
    path.write_bytes(fixture_path("docker-v2-app.tar").read_bytes() + bytes(128 * 1024))
    from keeptar.backends.embedded import EmbeddedBackend

    EmbeddedBackend(local_home).close()  # the catalog exists before the limit

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    arguments = ["load", "--no-progress", str(path) if source == "file" else "-"]
    with open(path, "rb") as stdin:
        result = subprocess.run(
            [sys.executable, "-m", "keeptar", *arguments],
            stdin=stdin,
            capture_output=True,
            preexec_fn=small_files_only,
            timeout=120,
        )
    message = result.stderr.decode()
    assert result.returncode == 5, message
    assert re.fullmatch(
        r"keeptar: error: writing block [0-9a-f]{32} to .*: File too large\n", message
    )
    assert run_keeptar("images", "--all", "--json").stdout == b"[]\n"
    assert list((local_home / "keep" / "tmp").iterdir()) == []
    with open(path, "rb") as stdin:
        assert run_keeptar(*arguments, stdin=stdin).returncode == 0


def test_ctrl_c_during_a_file_upload_leaves_nothing(emulator: Any) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    tag = "kt/interrupted-upload:1"
    env = {**os.environ, **emulator.env(emulator.alice)}
    command = [sys.executable, "-m", "keeptar", "load", "--force", "--tag", tag]
    path = str(fixture_path("docker-v2-app.tar"))
    puts = keep_puts(emulator)
    fault = emulator.inject("PUT", "/keep/", delay=4.0, times=10)
    try:
        process = subprocess.Popen(
            [*command, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        deadline = time.monotonic() + 30
        while keep_puts(emulator) == puts and time.monotonic() < deadline:
            time.sleep(0.05)  # until the upload has begun
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        fault.times = 0
    assert process.returncode == 130, err
    assert err.decode().strip() == "keeptar: error: interrupted"
    with emulator.environment(emulator.alice):
        assert list(ArvadosBackend().list_links([["name", "=", tag]])) == []
    rerun = subprocess.run([*command, path], capture_output=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    with emulator.environment(emulator.alice):
        assert len(list(ArvadosBackend().list_links([["name", "=", tag]]))) == 1


def test_ctrl_c_leaves_nothing(emulator: Any) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    tag = "kt/interrupted:1"
    data = fixture_path("docker-v2-app.tar").read_bytes()
    process = subprocess.Popen(
        [sys.executable, "-m", "keeptar", "load", "--force", "--tag", tag, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **emulator.env(emulator.alice)},
    )
    assert process.stdin is not None
    process.stdin.write(data[:5000])  # half an archive, then the user presses Ctrl-C
    process.stdin.flush()
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.decode().strip() == "keeptar: error: interrupted"
    with emulator.environment(emulator.alice):
        assert list(ArvadosBackend().list_links([["name", "=", tag]])) == []


# ---- with a real Docker daemon -----------------------------------------------------------


def test_arv_get_then_docker_load_gives_the_same_image(emulator: Any, dockerd: str) -> None:
    env = {**os.environ, **emulator.env(emulator.alice), "DOCKER_HOST": dockerd}
    for name in (
        "docker-v2-app.tar.xz",
        "buildah-docker-archive.tar",
        "arvados-hello-world-docker25.tar",
    ):  # (docker 20.10 cannot load plain OCI archives at all: image-formats notes §1)
        result = keeptar(
            emulator,
            "load",
            "--json",
            "--force",
            "--force-image-format",
            str(fixture_path(name)),
            account=emulator.alice,
        )
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        (engine,) = TRUTH[name]["docker"]  # what docker 20.10 itself made of the archive
        assert doc["image_id"] == engine["id"]
        # Another test may have loaded this image into the shared daemon: remove it, so
        # only the bytes arv-get gives back can make it appear again.
        subprocess.run(["docker", "rmi", "-f", engine["id"]], env=env, capture_output=True)
        with pytest.raises(subprocess.CalledProcessError):
            docker_image_id(env, engine["id"])
        pipeline = subprocess.run(
            f"set -o pipefail; arv-get '{doc['uuid']}/{doc['file_name']}' - | docker load -q",
            shell=True,
            executable="/bin/bash",
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert pipeline.returncode == 0, pipeline.stderr
        references = [
            line.removeprefix("Loaded image: ").removeprefix("Loaded image ID: ")
            for line in pipeline.stdout.splitlines()
        ]
        assert references, pipeline.stdout
        for reference in [*references, engine["id"]]:
            assert docker_image_id(env, reference) == engine["id"], reference


def test_load_from_docker_save(emulator: Any, dockerd: str) -> None:
    env = {"DOCKER_HOST": dockerd}
    daemon = {**os.environ, **env}
    expected = docker_image_id(daemon, docker_load(daemon, APP, "kt/app:2.0"))
    result = keeptar(
        emulator,
        "load",
        "--json",
        "--force",
        "--from",
        "docker",
        "kt/app:2.0",
        account=emulator.alice,
        **env,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["image_id"] == expected and doc["repo_tag"] == "kt/app:2.0"
    missing = keeptar(
        emulator, "load", "--from", "docker", "kt/nope:0", account=emulator.alice, **env
    )
    assert missing.returncode == 6 and b"no image" in missing.stderr


def test_images_lists_what_arv_keepdocker_registered(emulator: Any, dockerd: str) -> None:
    env = {**os.environ, **emulator.env(emulator.alice), "DOCKER_HOST": dockerd}
    archive = fixture_path("buildah-docker-archive.tar")
    reference = docker_load(env, archive, "kt/buildah:v1", rename="kt/upstream")
    uuid = arv_keepdocker(env, reference)
    rows = json.loads(
        keeptar(emulator, "images", "--json", reference, account=emulator.alice).stdout
    )
    assert len(rows) == 1
    assert rows[0]["collection"] == uuid
    assert rows[0]["image_id"] == TRUTH["buildah-docker-archive.tar"]["images"][0]["id"]


def big_layer_archive(path: Path, layer_mib: int) -> Path:
    """A real docker save with one layer replaced by *layer_mib* MiB of data (diff ID kept
    consistent), so the archive spans several 64 MiB Keep blocks."""
    payload = hashlib.shake_256(b"big layer").digest(layer_mib << 20)
    return with_new_config(APP, path, layers={0: payload})


def test_inspect_a_collection_reads_few_blocks(backend: Any, tmp_path: Path) -> None:
    from keeptar import inspect_archive
    from keeptar.archive import inspect_collection

    archive = big_layer_archive(tmp_path / "big.tar", 200)
    loaded = load_image(backend, str(archive), force=True)
    info, fetched, blocks = inspect_collection(backend, loaded.portable_data_hash)
    assert blocks == 4
    assert fetched < blocks
    assert info.to_json() == inspect_archive(archive).to_json()
    with tarfile.open(archive) as tar:  # the ID as the archive itself states it
        (entry,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
    assert info.images[0].id == "sha256:" + hashlib.sha256(config).hexdigest()
    verified, fetched_all, _ = inspect_collection(backend, loaded.uuid, verify=True)
    assert verified.to_json() == inspect_archive(archive, verify=True).to_json()
    assert fetched_all == blocks


def test_cli_inspects_a_collection(local_home: Path) -> None:
    loaded = load_image(
        __import__("keeptar.backends", fromlist=["open_backend"]).open_backend(),
        str(APP),
        force=True,
    )
    result = subprocess.run(
        [sys.executable, "-m", "keeptar", "inspect", "--json", loaded.portable_data_hash],
        capture_output=True,
        timeout=120,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"][0]["id"] == APP_ID
    assert b"read 1 of 1 Keep blocks" in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "keeptar", "inspect", "local-4zz18-000000000000000"],
        capture_output=True,
        timeout=120,
    )
    assert missing.returncode == 6 and b"not found" in missing.stderr
