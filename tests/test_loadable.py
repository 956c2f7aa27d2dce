"""Issue 9 §1 and §3: what is stored is what a compute node can load, one image per collection.

Expected values come from the fixtures read with `tarfile`/`json` and from the real
`docker load` (dockerd 20.10), never from keeptar's own parser.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture_path, load_truth, run_keeptar
from keeptar.archive import inspect_collection
from keeptar.catalog.images import HASH_LINK
from keeptar.keep import parse_manifest
from keeptar.keep.blocks import read_file_range
from keeptar.load import load_image

TRUTH = load_truth()
BLOB = re.compile(r"blobs/sha256/[0-9a-f]{64}")
DOCKER25 = "arvados-hello-world-docker25.tar"


# ---- helpers: everything from tarfile/json, not from keeptar ---------------------------


def stored(backend: Any, uuid: str) -> tuple[str, bytes, str]:
    """(file name, bytes, manifest text) of a one-file image collection."""
    record = backend.get_collection(uuid)
    (item,) = parse_manifest(record["manifest_text"])
    data = read_file_range(backend.get_block, record["manifest_text"], item.path, 0, item.size)
    return item.path, data, record["manifest_text"]


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def member_bytes(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read()


def body_end(data: bytes) -> int:
    """Where the end-of-archive marker starts, as tarfile's offsets give it."""
    last = members(data)[-1]
    return last.offset_data + -(-last.size // 512) * 512


def oci_layers(data: bytes) -> tuple[str, list[str]]:
    """The config and layer blob paths an OCI archive's index.json leads to."""
    index = json.loads(member_bytes(data, "index.json"))
    (entry,) = index["manifests"]
    manifest = json.loads(member_bytes(data, "blobs/sha256/" + entry["digest"][7:]))
    return (
        "blobs/sha256/" + manifest["config"]["digest"][7:],
        ["blobs/sha256/" + layer["digest"][7:] for layer in manifest["layers"]],
    )


def locators(manifest_text: str) -> list[str]:
    words = manifest_text.split()
    return [w.split("+A")[0] for w in words if re.fullmatch(r"[0-9a-f]{32}\+\d+(\+\S+)?", w)]


def whole_file_locator(data: bytes) -> str:
    return f"{hashlib.md5(data).hexdigest()}+{len(data)}"


def docker_load(dockerd: str, data: bytes) -> list[str]:
    """`docker load` the bytes; return its 'Loaded image' lines."""
    done = subprocess.run(
        ["docker", "load"],
        input=data,
        capture_output=True,
        timeout=300,
        env={"DOCKER_HOST": dockerd, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert done.returncode == 0, done.stderr.decode()
    return [line for line in done.stdout.decode().splitlines() if line.startswith("Loaded image")]


def docker_id(dockerd: str, ref: str) -> str:
    done = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DOCKER_HOST": dockerd, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def docker_rmi(dockerd: str, *refs: str) -> None:
    subprocess.run(
        ["docker", "rmi", "-f", *refs],
        capture_output=True,
        timeout=60,
        env={"DOCKER_HOST": dockerd, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )


def register_raw(backend: Any, data: bytes, image_id: str) -> dict[str, Any]:
    """A collection holding *data* as-is under a hash link, as an older keeptar stored it."""
    locator = backend.put_block(memoryview(data))
    record: dict[str, Any] = backend.create_collection(
        manifest_text=f". {locator} 0:{len(data)}:{image_id}.tar\n",
        name=f"raw {image_id[7:19]}",
        owner_uuid=backend.current_user().uuid,
        properties={},
        ensure_unique_name=True,
    )
    backend.create_link(
        link_class=HASH_LINK,
        name=image_id,
        head_uuid=record["uuid"],
        owner_uuid=backend.current_user().uuid,
        properties={},
    )
    return record


def upload_as_is(backend: Any, name: str, block: int = 0) -> tuple[bytes, str, list[str]]:
    """Store fixture *name* as one file of a new collection, cut into *block*-byte blocks
    (one block when 0), as ``arv-put`` of the archive leaves it; return its bytes, the
    collection's UUID and the block locators."""
    source = fixture_path(name).read_bytes()
    size = block or len(source)
    pieces = [source[i : i + size] for i in range(0, len(source), size)]
    blocks = [backend.put_block(memoryview(piece)) for piece in pieces]
    raw = backend.create_collection(
        manifest_text=f". {' '.join(blocks)} 0:{len(source)}:{name}\n",
        name=f"{name} in {size}-byte blocks",
        owner_uuid=backend.current_user().uuid,
        properties={},
        ensure_unique_name=True,
    )
    return source, raw["uuid"], blocks


def truth_id(name: str, image: str | None) -> str:
    """The image ID docker 20.10 gave *image* of fixture *name* (skopeo's, for the one
    image of an OCI archive, which that docker cannot load)."""
    if image is None:
        (only,) = TRUTH[name]["images"]
        return str(only["id"])
    return str(next(d["id"] for d in TRUTH[name]["docker"] if image in d["repo_tags"]))


# ---- §1: OCI-only archives get Docker 25+'s manifest.json ------------------------------


@pytest.mark.parametrize("name", ["skopeo-oci-archive.tar", "podman-oci-archive.tar"])
def test_oci_only_archive_gets_a_manifest_json_zero_copy(backend: Any, name: str) -> None:
    source = fixture_path(name).read_bytes()
    image_id = TRUTH[name]["images"][0]["id"]
    result = load_image(backend, str(fixture_path(name)), tag="kt/oci-only:v1", force=True)
    assert result.image_id == image_id
    file_name, data, manifest_text = stored(backend, result.uuid)
    assert file_name == f"{image_id}.tar"
    # The original archive up to its end marker, unchanged, then the new members.
    end = body_end(source)
    assert data[:end] == source[:end]
    listing = [m.name for m in members(data)]
    assert listing == [m.name for m in members(source)] + ["manifest.json", "repositories"]
    config, layers = oci_layers(source)
    (entry,) = json.loads(member_bytes(data, "manifest.json"))
    assert entry == {"Config": config, "RepoTags": ["kt/oci-only:v1"], "Layers": layers}
    assert json.loads(member_bytes(data, "repositories")) == {
        "kt/oci-only": {"v1": TRUTH[name]["images"][0]["diff_ids"][-1][7:]}
    }
    assert data.endswith(b"\0" * 1024) and len(data) % 512 == 0
    # Zero-copy: the uploaded block (the whole file) is referenced, plus one small block.
    blocks = locators(manifest_text)
    assert blocks[0] == whole_file_locator(source) and len(blocks) == 2
    assert int(blocks[1].split("+")[1]) <= 4096
    # keeptar itself reads it back as Docker 25's layout, every digest checked.
    info, _, _ = inspect_collection(backend, result.uuid, verify=True)
    assert info.format.value == "docker-oci" and [i.id for i in info.images] == [image_id]


def test_appended_layout_is_docker_25s(backend: Any) -> None:
    """Same member kinds, path forms and manifest.json keys as a real Docker 25 save."""
    docker25 = fixture_path(DOCKER25).read_bytes()
    (theirs,) = json.loads(member_bytes(docker25, "manifest.json"))
    result = load_image(backend, str(fixture_path("skopeo-oci-archive.tar")), force=True)
    _, data, _ = stored(backend, result.uuid)
    (ours,) = json.loads(member_bytes(data, "manifest.json"))
    assert list(ours) == [k for k in theirs if k != "LayerSources"]  # Config, RepoTags, Layers
    for doc in (ours, theirs):
        assert BLOB.fullmatch(doc["Config"])
        assert all(BLOB.fullmatch(layer) for layer in doc["Layers"])
    top = {m.name for m in members(data) if "/" not in m.name.rstrip("/")}
    assert top == {m.name for m in members(docker25) if "/" not in m.name.rstrip("/")}
    ours_repos = json.loads(member_bytes(data, "repositories"))
    theirs_repos = json.loads(member_bytes(docker25, "repositories"))
    for repos, doc in ((ours_repos, ours), (theirs_repos, theirs)):
        ((tags,),) = [list(v.values()) for v in repos.values()]
        assert "blobs/sha256/" + tags != doc["Config"]  # names the top layer, not the config


@pytest.mark.parametrize("name", ["skopeo-oci-archive.tar", "podman-oci-archive.tar"])
def test_oci_only_archive_loads_in_docker_with_its_id(
    backend: Any, dockerd: str, name: str
) -> None:
    image_id = TRUTH[name]["images"][0]["id"]
    tag = f"kt/oci-{name.split('-')[0]}:loaded"
    result = load_image(backend, str(fixture_path(name)), tag=tag, force=True)
    _, data, _ = stored(backend, result.uuid)
    docker_rmi(dockerd, tag, image_id)
    try:
        assert docker_load(dockerd, data) == [f"Loaded image: {tag}"]
        assert docker_id(dockerd, tag) == image_id
    finally:
        docker_rmi(dockerd, tag, image_id)


# ---- §3: one image per collection ------------------------------------------------------


CHOICES = [
    ("docker-v2-two-images.tar", "kt/base:v1"),
    ("docker-v2-two-images.tar", "kt/app:2.0"),  # its first layer is a symlink
    ("podman-two-images.tar", "localhost/kt/buildah:v2"),
    ("ggcr-test-link.tar", None),  # 2 images, a symlinked layer
    ("podman-docker-two-images.tar.xz", "example.com/empty/but:different"),  # Parent, symlink
    ("ggcr-test-bundle.tar", "test_image_2"),  # LayerSources, no directory entries
]


def source_bytes(name: str) -> bytes:
    """The fixture's tar bytes (decompressed, as keeptar stores them)."""
    data = fixture_path(name).read_bytes()
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def manifest_item(name: str, ref: str | None) -> dict[str, Any]:
    """The source manifest.json item for *ref*, or the first with a symlinked layer."""
    source = source_bytes(name)
    by_name = {m.name: m for m in members(source)}
    items: list[dict[str, Any]] = json.loads(member_bytes(source, "manifest.json"))
    if ref is None:
        return next(i for i in items if any(by_name[layer].issym() for layer in i["Layers"]))
    return next(i for i in items if ref in (i["RepoTags"] or []))


def _choose(name: str, ref: str | None) -> tuple[str, dict[str, Any]]:
    """(--image value, {"id"}) for a multi-image fixture: the ID is the sha256 of the config
    bytes as tarfile reads them (and what dockerd reported, where truth.json has it)."""
    config = member_bytes(source_bytes(name), manifest_item(name, ref)["Config"])
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    for docker in TRUTH.get(name, {}).get("docker", []):
        if ref in docker["repo_tags"]:
            assert docker["id"] == image_id
    return ref or image_id[7:19], {"id": image_id}


@pytest.mark.parametrize(("name", "ref"), CHOICES)
def test_multi_image_archive_stores_only_the_chosen_image(
    backend: Any, name: str, ref: str | None
) -> None:
    source = source_bytes(name)
    wanted, truth = _choose(name, ref)
    result = load_image(backend, str(fixture_path(name)), image=wanted, force=True)
    assert result.image_id == truth["id"]
    _, data, manifest_text = stored(backend, result.uuid)
    (entry,) = json.loads(member_bytes(data, "manifest.json"))
    assert entry["Config"] in {m.name for m in members(source)}
    config = member_bytes(data, entry["Config"])
    assert "sha256:" + hashlib.sha256(config).hexdigest() == truth["id"]
    # Layers are regular members of the stored file with the diff IDs the config names.
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    assert [
        "sha256:" + hashlib.sha256(member_bytes(data, layer)).hexdigest()
        for layer in entry["Layers"]
    ] == diff_ids
    stored_members = members(data)
    assert all(not m.issym() and not m.islnk() for m in stored_members)
    # No member of another image: every config in the file is this image's.
    configs = [
        m.name
        for m in stored_members
        if m.name.endswith(".json") and "/" not in m.name and m.name != "manifest.json"
    ]
    assert configs == [entry["Config"]]
    assert {m.name for m in stored_members} <= {m.name for m in members(source)} | {
        "manifest.json",
        "repositories",
    }
    assert "Parent" not in entry
    assert entry.get("LayerSources") == manifest_item(name, ref).get("LayerSources")
    # Zero-copy: the uploaded block is referenced, plus one small block.
    blocks = locators(manifest_text)
    assert blocks[0] == whole_file_locator(source) and len(blocks) == 2
    assert int(blocks[1].split("+")[1]) <= 4096
    assert len(data) < len(source)


@pytest.mark.parametrize(("name", "ref"), CHOICES)
def test_multi_image_archive_loads_one_image_in_docker(
    backend: Any, dockerd: str, name: str, ref: str | None
) -> None:
    wanted, truth = _choose(name, ref)
    tag = "kt/chosen:" + hashlib.sha256(f"{name}{ref}".encode()).hexdigest()[:8]
    result = load_image(backend, str(fixture_path(name)), image=wanted, tag=tag, force=True)
    _, data, _ = stored(backend, result.uuid)
    docker_rmi(dockerd, tag, truth["id"])
    try:
        assert docker_load(dockerd, data) == [f"Loaded image: {tag}"]  # exactly one image
        assert docker_id(dockerd, tag) == truth["id"]
    finally:
        docker_rmi(dockerd, tag, truth["id"])


@pytest.mark.parametrize(
    ("name", "ref"),
    [("podman-two-images.tar", "localhost/kt/buildah:v1"), ("podman-oci-archive.tar", None)],
)
def test_stdin_gzip_gives_the_same_file(backend: Any, name: str, ref: str | None) -> None:
    """The streaming path (compressed input, stored decompressed) composes the same file."""
    from_file = load_image(backend, str(fixture_path(name)), image=ref, force=True)
    done = run_keeptar(
        "load",
        "--json",
        "--force",
        *(["--image", ref] if ref else []),
        "-",
        input=gzip.compress(fixture_path(name).read_bytes()),
    )
    assert done.returncode == 0, done.stderr
    from_stdin = json.loads(done.stdout)
    assert from_stdin["portable_data_hash"] == from_file.portable_data_hash
    _, data, _ = stored(backend, from_stdin["uuid"])
    (entry,) = json.loads(member_bytes(data, "manifest.json"))
    assert entry["RepoTags"] == [from_file.repo_tag]  # the registered name


def test_collection_source_is_composed_from_its_segments(backend: Any) -> None:
    """A multi-image or OCI-only file already in Keep: segments of its blocks + one block."""
    for name, image in (
        ("docker-v2-two-images.tar", "kt/base:v1"),
        ("skopeo-oci-archive.tar", None),
    ):
        source, raw, _ = upload_as_is(backend, name)
        result = load_image(backend, raw, image=image, force=True)
        assert result.image_id == truth_id(name, image)
        _, data, manifest_text = stored(backend, result.uuid)
        assert locators(manifest_text)[0] == whole_file_locator(source)
        assert len(locators(manifest_text)) == 2
        (entry,) = json.loads(member_bytes(data, "manifest.json"))
        config = member_bytes(data, entry["Config"])
        assert "sha256:" + hashlib.sha256(config).hexdigest() == result.image_id


# ---- reuse only what is loadable -------------------------------------------------------


def loadable_elsewhere(backend: Any, image_id: str) -> bool:
    """Whether a collection of *image_id* that `docker load` could use exists already
    (the emulator lives for the whole session): one .tar whose manifest.json has one item."""
    heads = [
        link["head_uuid"]
        for link in backend.list_links([["link_class", "=", HASH_LINK], ["name", "=", image_id]])
    ]
    for uuid in heads:
        try:
            name, data, _ = stored(backend, uuid)
            if (
                name == f"{image_id}.tar"
                and len(json.loads(member_bytes(data, "manifest.json"))) == 1
            ):
                return True
        except (KeyError, ValueError):
            continue
    return False


@pytest.mark.parametrize(
    ("name", "image"),
    [("skopeo-oci-archive.tar", None), ("docker-v2-two-images.tar", "kt/base:v1")],
)
def test_unloadable_collection_is_not_reused(backend: Any, name: str, image: str | None) -> None:
    source = fixture_path(name).read_bytes()
    wanted = image or TRUTH[name]["images"][0]["id"]
    image_id = truth_id(name, image)
    old = register_raw(backend, source, image_id)
    elsewhere = loadable_elsewhere(backend, image_id)
    warnings: list[str] = []
    result = load_image(backend, str(fixture_path(name)), image=wanted, warn=warnings.append)
    assert result.uuid != old["uuid"]
    _, data, _ = stored(backend, result.uuid)
    assert len(json.loads(member_bytes(data, "manifest.json"))) == 1
    if elsewhere:  # a loadable copy made by an earlier test is reused, silently
        assert result.reused and not warnings
    else:
        assert not result.reused
        assert len(warnings) == 1 and old["uuid"] in warnings[0] and "\n" not in warnings[0]
    # The loadable copy is reused from now on, silently.
    again: list[str] = []
    second = load_image(backend, str(fixture_path(name)), image=wanted, warn=again.append)
    assert second.reused and second.uuid != old["uuid"] and not again


def test_loadable_collection_is_reused(backend: Any) -> None:
    source = fixture_path("docker-v2-app.tar").read_bytes()
    image_id = TRUTH["docker-v2-app.tar"]["images"][0]["id"]
    old = register_raw(backend, source, image_id)
    warnings: list[str] = []
    result = load_image(backend, str(fixture_path("docker-v2-app.tar")), warn=warnings.append)
    assert result.reused and not warnings
    if len(set(image_collections(backend, image_id))) == 1:  # a fresh store: only that one
        assert result.uuid == old["uuid"]


def image_collections(backend: Any, image_id: str) -> list[str]:
    return [
        link["head_uuid"]
        for link in backend.list_links([["link_class", "=", HASH_LINK], ["name", "=", image_id]])
    ]


def test_cli_prints_the_warning_on_stderr(local_home: Path) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    name = "podman-oci-archive.tar"
    old = register_raw(
        EmbeddedBackend(local_home), fixture_path(name).read_bytes(), TRUTH[name]["images"][0]["id"]
    )
    result = run_keeptar("load", str(fixture_path(name)))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keeptar: warning: ") and old["uuid"] in lines[0]
    assert result.stdout.decode().strip() != old["uuid"]


# ---- tar and block edge cases ----------------------------------------------------------


def pax_copy(name: str) -> bytes:
    """*name* re-written by tarfile in PAX format with an extension header before every
    member, so each member's span starts at its extension header, not its own header."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(fixture_path(name).read_bytes()), mode="r:") as src,
        tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src.getmembers():
            member.pax_headers = {"comment": "x" * 600}  # longer than a block
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def test_members_with_extension_headers_are_kept_whole(
    backend: Any, dockerd: str, tmp_path: Path
) -> None:
    name, ref = "docker-v2-two-images.tar", "kt/app:2.0"
    path = tmp_path / "pax.tar"
    path.write_bytes(pax_copy(name))
    truth = next(d for d in TRUTH[name]["docker"] if ref in d["repo_tags"])
    tag = "kt/pax:app"
    result = load_image(backend, str(path), image=ref, tag=tag, force=True)
    _, data, _ = stored(backend, result.uuid)
    stored_members = members(data)
    assert all(m.pax_headers.get("comment") == "x" * 600 for m in stored_members[:-2])
    docker_rmi(dockerd, tag, truth["id"])
    try:
        assert docker_load(dockerd, data) == [f"Loaded image: {tag}"]
        assert docker_id(dockerd, tag) == truth["id"]
    finally:
        docker_rmi(dockerd, tag, truth["id"])


@pytest.mark.parametrize("block", [700, 4096])
def test_composed_from_many_small_blocks(backend: Any, block: int) -> None:
    """Member ranges that start and end inside blocks and span several of them."""
    for name, image in (
        ("podman-two-images.tar", "localhost/kt/buildah:v2"),
        ("podman-oci-archive.tar", None),
    ):
        source, raw, stored_blocks = upload_as_is(backend, name, block)
        result = load_image(backend, raw, image=image, force=True)
        assert result.image_id == truth_id(name, image)
        _, data, manifest_text = stored(backend, result.uuid)
        used = locators(manifest_text)
        assert set(used[:-1]) <= {loc.split("+A")[0] for loc in stored_blocks}
        assert len(used) - 1 < len(stored_blocks) or image is None
        (entry,) = json.loads(member_bytes(data, "manifest.json"))
        config = member_bytes(data, entry["Config"])
        assert "sha256:" + hashlib.sha256(config).hexdigest() == result.image_id
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        got = []
        for layer in entry["Layers"]:
            blob = member_bytes(data, layer)
            if blob[:2] == b"\x1f\x8b":
                blob = gzip.decompress(blob)
            got.append("sha256:" + hashlib.sha256(blob).hexdigest())
        assert got == diff_ids
        for member in members(data):  # every kept member's bytes are the original's
            if member.isfile() and member.name not in ("manifest.json", "repositories"):
                assert member_bytes(data, member.name) == member_bytes(source, member.name)


# ---- Singularity's reader: containers/image docker-archive, through skopeo --------------


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("skopeo-oci-archive.tar", None),
        ("podman-oci-archive.tar", None),
        ("docker-v2-two-images.tar", "kt/app:2.0"),
        ("podman-two-images.tar", "localhost/kt/buildah:v1"),
    ],
)
def test_containers_image_reads_the_stored_file_as_one_image(
    backend: Any, tmp_path: Path, name: str, image: str | None
) -> None:
    """`singularity build … docker-archive://` reads with containers/image, as skopeo does:
    with no image named it needs exactly one image in manifest.json."""
    result = load_image(backend, str(fixture_path(name)), image=image, force=True)
    _, data, _ = stored(backend, result.uuid)
    path = tmp_path / "stored.tar"
    path.write_bytes(data)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"docker-archive:{path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["config"]["digest"] == result.image_id
    copied = subprocess.run(  # reads and checks every layer
        ["skopeo", "copy", f"docker-archive:{path}", f"dir:{tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert copied.returncode == 0, copied.stderr


# ---- is_loadable reads the end of the file first ----------------------------------------


class CountingBackend:
    """Passes get_block through to a backend, counting the calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fetched = 0

    def get_block(self, locator: str) -> bytes:
        self.fetched += 1
        data: bytes = self.inner.get_block(locator)
        return data


def small_blocks(backend: Any, data: bytes, file_name: str, block: int = 1024) -> tuple[str, int]:
    """(manifest text, block count) of *data* stored as *block*-byte blocks."""
    pieces = [
        backend.put_block(memoryview(data[i : i + block])) for i in range(0, len(data), block)
    ]
    return f". {' '.join(pieces)} 0:{len(data)}:{file_name}\n", len(pieces)


def reordered(name: str, first: str) -> bytes:
    """Fixture *name* re-written by tarfile with member *first* moved to the front."""
    return reordered_bytes(fixture_path(name).read_bytes(), first)


def reordered_bytes(archive: bytes, first: str) -> bytes:
    """The tar *archive* re-written by tarfile with member *first* moved to the front."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as src,
        tarfile.open(fileobj=out, mode="w:", format=tarfile.GNU_FORMAT) as dst,
    ):
        ordered = sorted(src.getmembers(), key=lambda m: m.name != first)
        for member in ordered:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data_of", "loadable", "scans"),
    [
        ("docker-v2-app.tar", None, True, False),  # manifest.json at the end: tail only
        ("docker-v2-two-images.tar", None, False, False),  # two items: tail only
        ("skopeo-oci-archive.tar", None, False, True),  # no manifest.json: full scan
        ("docker-v2-app.tar", "manifest.json", True, True),  # manifest.json first: full scan
    ],
)
def test_is_loadable_looks_at_the_end_first(
    backend: Any,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    data_of: str | None,
    loadable: bool,
    scans: bool,
) -> None:
    from keeptar import inspect_archive
    from keeptar.catalog import loadable as module

    monkeypatch.setattr(module, "TAIL_BYTES", 3 * 1024)
    data = reordered(name, data_of) if data_of else fixture_path(name).read_bytes()
    image = inspect_archive(io.BytesIO(data)).images[0]  # the input, not an expected value
    manifest_text, count = small_blocks(backend, data, image.file_name)
    counting = CountingBackend(backend)
    assert module.is_loadable(counting, manifest_text, image) is loadable  # type: ignore[arg-type]
    tail_blocks = 3 * 1024 // 1024 + 1
    if scans:
        assert counting.fetched > tail_blocks
    else:
        assert counting.fetched <= tail_blocks < count


def test_is_loadable_wants_one_tar_named_by_the_image(backend: Any) -> None:
    from keeptar import inspect_archive
    from keeptar.catalog.loadable import is_loadable

    data = fixture_path("docker-v2-app.tar").read_bytes()
    image = inspect_archive(io.BytesIO(data)).images[0]
    locator = backend.put_block(memoryview(data))
    good = f". {locator} 0:{len(data)}:{image.file_name}\n"
    assert is_loadable(backend, good, image)
    assert not is_loadable(backend, f". {locator} 0:{len(data)}:other.tar\n", image)
    two = f". {locator} 0:{len(data)}:{image.file_name} 0:{len(data)}:copy.tar\n"
    assert not is_loadable(backend, two, image)


def test_a_manifest_json_inside_the_last_layer_is_not_taken_for_the_archives(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dockerd: str
) -> None:
    """A web app's /manifest.json in a layer's tar sits at an aligned offset of the
    archive too.  With the archive's own manifest.json first (not at the end), the
    tail holds only the layer's: it must not decide, and docker's verdict stands."""
    from archive_edit import with_new_config
    from keeptar import inspect_archive
    from keeptar.catalog import loadable as module

    web = io.BytesIO()
    with tarfile.open(fileobj=web, mode="w:", format=tarfile.GNU_FORMAT) as layer:
        body = b'{"name": "web app", "start_url": "/"}\n'
        entry = tarfile.TarInfo("manifest.json")  # /manifest.json, a web root
        entry.size = len(body)
        layer.addfile(entry, io.BytesIO(body))
    source = fixture_path("docker-v2-app.tar")
    with tarfile.open(source) as tar:
        (item,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        by_offset = sorted(item["Layers"], key=lambda name: tar.getmember(name).offset)
    last = item["Layers"].index(by_offset[-1])  # the layer stored last in the archive
    edited = with_new_config(source, tmp_path / "web.tar", layers={last: web.getvalue()})
    data = reordered_bytes(edited.read_bytes(), "manifest.json")
    (tmp_path / "first.tar").write_bytes(data)
    loaded = subprocess.run(
        ["docker", "load", "-i", str(tmp_path / "first.tar")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"DOCKER_HOST": dockerd, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert loaded.returncode == 0, loaded.stderr  # docker: a loadable archive
    image = inspect_archive(io.BytesIO(data)).images[0]  # the input, not an expected value
    assert docker_id(dockerd, image.id) == image.id
    monkeypatch.setattr(module, "TAIL_BYTES", len(data))  # the tail is the whole file
    manifest_text, _ = small_blocks(backend, data, image.file_name)
    assert module.is_loadable(backend, manifest_text, image)
