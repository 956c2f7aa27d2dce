"""Image names: registered exactly as given, checked with Docker's grammar, and refused
before any upload where the Arvados API server would refuse them (issues 8 §4, 9 §2, 9 §6).

Verdicts on names come from the real tools: the test Docker daemon (``docker tag``,
``docker load``), the real ``Keep::Manifest.validate!`` (recorded with Ruby in
``fixtures/manifest-validate-truth.json``), and the real SDK against the emulator.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, fixture_path, load_truth, run_keeptar
from keeptar.backends.embedded import EmbeddedBackend
from keeptar.catalog.references import parse_image_ref, reference_problem
from keeptar.errors import UsageError
from keeptar.load import load_image

TRUTH = load_truth()
APP = fixture_path("docker-v2-app.tar")
APP_ID = TRUTH["docker-v2-app.tar"]["images"][0]["id"]
HEX64 = "a" * 64
LOCATOR = "acbd18db4cc2f85cedef654fccc4a4d8+3"


def with_repo_tags(folder: Path, tags: list[str] | None, name: str = "tagged.tar") -> Path:
    """The APP fixture, unchanged but for manifest.json's RepoTags (and no ``repositories``)."""
    out = folder / name
    with tarfile.open(APP) as src, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "repositories":
                continue
            if member.name == "manifest.json":
                doc = json.loads(data)  # type: ignore[arg-type]
                doc[0]["RepoTags"] = tags
                data = json.dumps(doc).encode()
            if data is not None:
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out


def repo_tag_links(backend: Any, uuid: str) -> list[str]:
    return sorted(
        link["name"]
        for link in backend.list_links(
            [["head_uuid", "=", uuid], ["link_class", "=", "docker_image_repo+tag"]]
        )
    )


def stored_so_far(request: pytest.FixtureRequest, backend: Any) -> int:
    """Blocks stored: files under the embedded store's keep/, or PUTs to the emulator."""
    if isinstance(backend, EmbeddedBackend):
        keep = backend.home / "keep"
        return sum(1 for p in keep.rglob("*") if p.is_file() and p.parent.name != "tmp")
    emulator = request.getfixturevalue("emulator")
    return sum(1 for method, path in emulator.requests if method == "PUT" and path == "/keep/")


def assert_usage_error(result: subprocess.CompletedProcess[bytes], *words: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert result.stdout == b"" and "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keeptar: error: "), stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ---- Docker's grammar, checked against the test Docker daemon ------------------------------

# Names spanning each rule: lowercase, separators, tag length and characters, repository
# length (Docker 20.10 counts docker.io/library/), 64 hex digits, digests, sha256, ports.
NAMES = [
    "ubuntu:22.04",
    "docker.io/library/ubuntu:22.04",
    "index.docker.io/library/ubuntu:22.04",
    "library/ubuntu",
    "host:5000/x:1",
    "host:5000/x",
    "localhost/kt/app:2.0",
    "my-registry.example.com:8443/team/app:v1_2.3-rc",
    "Ubuntu:1",
    "foo/Bar:1",
    "Foo/bar:1",
    "Foo.example/bar:1",
    "ubuntu:-x",
    "ubuntu:.x",
    "ubuntu:_x",
    "a--b:1",
    "a..b:1",
    "a__b:1",
    "a___b:1",
    "a_-b:1",
    "-a:1",
    "a/:1",
    "x:" + "t" * 128,
    "x:" + "t" * 129,
    "a" * 237 + ":1",
    "a" * 238 + ":1",
    "example.com/" + "a" * 243 + ":1",
    "example.com/" + "a" * 244 + ":1",
    HEX64,
    HEX64 + ":1",
    "sha256:abc",
    "docker.io/library/sha256:abc",
    "x@sha256:" + HEX64,
    "x:1@sha256:" + HEX64,
    "[::1]:5000/x:1",
    "x y:1",
    "x:1 ",
    "ubuntü:1",
]


def docker_ok(*args: str) -> bool:
    return subprocess.run(["docker", *args], capture_output=True).returncode == 0


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:40])
def test_tag_verdicts_are_dockers(dockerd: str, name: str) -> None:
    """``--tag NAME`` is accepted exactly when ``docker tag IMAGE NAME`` accepts NAME."""
    assert docker_ok("load", "-i", str(APP))
    docker_says = docker_ok("tag", "kt/app:2.0", name)
    try:
        ref = parse_image_ref(name)
    except UsageError as exc:
        assert not docker_says, f"Docker accepts {name!r}, keeptar says: {exc}"
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert docker_says, f"Docker refuses {name!r}, keeptar accepts it"
    # Kept as typed: only the default tag is added (and host:443/ loses its port).
    assert str(ref) == (name if ":" in name.rpartition("/")[2] else f"{name}:latest")


@pytest.mark.parametrize(
    "name",
    [n for n in NAMES if ":" in n.rpartition("/")[2]] + ["ubuntu", "host:5000/x"],
    ids=lambda n: n[:40],
)
def test_repo_tag_verdicts_are_docker_loads(dockerd: str, tmp_path: Path, name: str) -> None:
    """An archive RepoTag is registered exactly when ``docker load`` gives the image that name."""
    subprocess.run(["docker", "rmi", name], capture_output=True)
    archive = with_repo_tags(tmp_path, [name])
    loaded = docker_ok("load", "-i", str(archive))
    found = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True
    )
    docker_named_it = loaded and found.returncode == 0 and found.stdout.decode().strip() == APP_ID
    assert (reference_problem(name) is None) == docker_named_it, (name, reference_problem(name))


def test_docker_load_refuses_a_whole_archive_over_one_bad_repo_tag(
    dockerd: str, tmp_path: Path
) -> None:
    """Why keeptar warns: such an archive can be stored, but a compute node cannot load it."""
    archive = with_repo_tags(tmp_path, ["kt/fine:1", "Foo/bar:1"])
    assert not docker_ok("load", "-i", str(archive))
    assert reference_problem("Foo/bar:1") is not None


def test_hostile_names_are_answered_quickly() -> None:
    for name in ["a" + "-" * 5000 + "!", "a." * 3000 + ":1", ("a" * 30 + "-") * 200 + "/!"]:
        assert reference_problem(name) is not None


# ---- names are stored exactly as given ------------------------------------------------------


def test_a_fully_qualified_tag_is_registered_as_typed(backend: Any) -> None:
    name = "docker.io/library/ubuntu:22.04"
    result = load_image(backend, str(APP), tag=name, force=True)
    assert result.repo_tag == name
    assert repo_tag_links(backend, result.uuid) == [name]
    record = backend.get_collection(result.uuid)
    assert record["properties"]["docker-image-repo-tag"] == name
    assert record["name"] == f"Docker image docker.io library ubuntu:22.04 {APP_ID[:12]}"


def test_tag_keeps_arv_keepdockers_two_rules(backend: Any) -> None:
    """As arv-keepdocker: ``latest`` when no tag is given; ``host:443/`` drops its port."""
    result = load_image(backend, str(APP), tag="registry.example:443/kt/app", force=True)
    assert repo_tag_links(backend, result.uuid) == ["registry.example/kt/app:latest"]


def test_fully_qualified_repo_tags_are_registered_as_written(backend: Any, tmp_path: Path) -> None:
    tags = ["docker.io/library/ktnames:1.0", "localhost/kt/names:2", "ktnames:1.0"]
    result = load_image(backend, str(with_repo_tags(tmp_path, tags)), force=True)
    assert repo_tag_links(backend, result.uuid) == sorted(tags)
    assert result.repo_tag == tags[0]


def test_fully_qualified_names_from_a_real_tool_are_kept(backend: Any) -> None:
    """buildah writes ``docker.io/kt/buildah:v1``; ``docker images`` would show ``kt/buildah``."""
    archive = fixture_path("buildah-docker-archive.tar")
    with tarfile.open(archive) as tar:
        (item,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert "docker.io/kt/buildah:v1" in item["RepoTags"]
    assert "kt/buildah:v1" in TRUTH["buildah-docker-archive.tar"]["docker"][0]["repo_tags"]
    result = load_image(backend, str(archive), force=True)
    assert repo_tag_links(backend, result.uuid) == sorted(item["RepoTags"])


def test_images_matches_every_spelling_of_one_repository(backend: Any) -> None:
    name = "docker.io/library/ubuntu:22.04"
    result = load_image(backend, str(APP), tag=name, force=True)
    for query in [
        "ubuntu:22.04",
        "docker.io/library/ubuntu:22.04",
        "library/ubuntu:22.04",
        "index.docker.io/ubuntu:22.04",
    ]:
        listed = run_keeptar("images", "--json", query)
        assert listed.returncode == 0, listed.stderr
        rows = [r for r in json.loads(listed.stdout) if r["collection"] == result.uuid]
        # Found under any spelling, shown as stored.
        assert [(r["repo"], r["tag"]) for r in rows] == [("docker.io/library/ubuntu", "22.04")]
    for other in ["ubuntu:22.10", "other/ubuntu:22.04", "example.com/ubuntu:22.04", "ubuntu"]:
        listed = run_keeptar("images", "--json", other)
        assert result.uuid not in {r["collection"] for r in json.loads(listed.stdout)}


def test_image_choice_matches_every_spelling(backend: Any) -> None:
    archive = fixture_path("docker-v2-two-images.tar")
    (first, second) = TRUTH["docker-v2-two-images.tar"]["docker"]
    repo, _, tag = second["repo_tags"][0].rpartition(":")
    result = load_image(backend, str(archive), image=f"docker.io/{repo}:{tag}", force=True)
    assert result.image_id == second["id"] != first["id"]


# ---- archive RepoTags that cannot be registered: skipped, with a warning ---------------------


def test_bad_repo_tags_are_skipped_with_one_warning_each(backend: Any, tmp_path: Path) -> None:
    bad = ["Kt/Upper:1", "kt/x:-bad", "kt/digest:1@sha256:" + HEX64, "ktnotag"]
    long_ok = "kt/" + "l" * 200 + ":" + "t" * 60  # Docker takes it; a link name cannot
    assert reference_problem(long_ok) is None and len(long_ok) > 255
    archive = with_repo_tags(tmp_path, ["kt/good:1", *bad, long_ok])
    loaded = run_keeptar("load", "--json", "--force", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    uuid = json.loads(loaded.stdout)["uuid"]
    assert repo_tag_links(backend, uuid) == ["kt/good:1"]
    warnings = loaded.stderr.decode().strip().splitlines()
    assert len(warnings) == len(bad) + 1, warnings
    for line, tag in zip(warnings, [*bad, long_ok], strict=True):
        assert line.startswith("keeptar: warning: archive tag ")
        assert repr(tag[:60])[:-1] in line and "not registered" in line
    assert "255" in warnings[-1]
    again = run_keeptar("load", "--json", str(archive))  # reused: the same warnings, once each
    assert again.returncode == 0 and json.loads(again.stdout)["uuid"] == uuid
    assert again.stderr.decode().strip().splitlines() == warnings


def test_warnings_go_to_a_callback_not_to_stderr(
    backend: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    archive = with_repo_tags(tmp_path, ["kt/good:2", "Bad:1"])
    heard: list[str] = []
    result = load_image(backend, str(archive), force=True, warn=heard.append)
    assert repo_tag_links(backend, result.uuid) == ["kt/good:2"]
    assert len(heard) == 1 and "'Bad:1'" in heard[0] and "lowercase" in heard[0]
    assert capfd.readouterr().err == ""


# ---- refused before anything is stored --------------------------------------------------------


BAD_LOADS = [
    (["--tag", "Kt/App:1"], "lowercase"),
    (["--tag", "kt/app:-1"], "not a valid image name"),
    (["--tag", "kt/app@sha256:" + HEX64], "digest"),
    (["--tag", HEX64], "image ID"),
    (["--tag", "kt/" + "r" * 200 + ":" + "t" * 100], "link name"),
    (["--tag", "kt/" + "r" * 200 + ":" + "t" * 40], "--name"),
    (["--name", "a/b"], "'/'"),
    (["--name", "."], "'.'"),
    (["--name", ".."], "'..'"),
    (["--name", "n" * 256], "255"),
]


@pytest.mark.parametrize(("args", "words"), BAD_LOADS, ids=lambda a: str(a)[:30])
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_names_the_server_refuses_are_refused_before_any_upload(
    request: pytest.FixtureRequest, backend: Any, args: list[str], words: str, source: str
) -> None:
    before = stored_so_far(request, backend)
    if source == "file":
        result = run_keeptar("load", "--force", *args, str(APP))
    else:
        result = run_keeptar("load", "--force", *args, "-", input=APP.read_bytes())
    assert_usage_error(result, words)
    assert stored_so_far(request, backend) == before


def test_a_long_tag_is_fine_with_a_short_name(backend: Any) -> None:
    tag = "kt/" + "r" * 200 + ":" + "t" * 40
    result = load_image(backend, str(APP), tag=tag, name="long tag", force=True)
    assert repo_tag_links(backend, result.uuid) == [tag]
    assert backend.get_collection(result.uuid)["name"] == "long tag"


def test_a_long_archive_tag_needs_a_name_before_any_upload(
    request: pytest.FixtureRequest, backend: Any, tmp_path: Path
) -> None:
    """A RepoTag short enough for a link but too long for the default collection name."""
    tag = "kt/" + "r" * 200 + ":" + "t" * 40
    archive = with_repo_tags(tmp_path, [tag])
    before = stored_so_far(request, backend)
    assert_usage_error(run_keeptar("load", "--force", str(archive)), "--name")
    assert stored_so_far(request, backend) == before
    named = run_keeptar("load", "--json", "--force", "--name", "x", str(archive))
    assert named.returncode == 0, named.stderr
    assert repo_tag_links(backend, json.loads(named.stdout)["uuid"]) == [tag]
    # From a pipe the tag is known only after the bytes: still refused, nothing registered.
    links = len(list(backend.list_links([["name", "=", tag]])))
    piped = run_keeptar("load", "--force", "-", input=archive.read_bytes())
    assert_usage_error(piped, "--name")
    assert len(list(backend.list_links([["name", "=", tag]]))) == links


# ---- the emulator refuses what the server refuses, through the real SDK --------------------


def test_manifest_verdicts_are_the_real_validators() -> None:
    from arvados_emulator import ApiError, manifest_problem

    doc = json.loads((FIXTURES / "manifest-validate-truth.json").read_text())
    assert "keep.rb" in doc["_source"] and len(doc["cases"]) > 30
    for manifest, verdict in doc["cases"]:
        try:
            got = manifest_problem(manifest)
        except ApiError as exc:
            got = exc.message
        assert got == verdict, manifest


def _refusal(call: Any) -> tuple[int, str]:
    from googleapiclient.errors import HttpError

    with pytest.raises(HttpError) as caught:
        call.execute()
    errors = json.loads(caught.value.content)["errors"]
    return caught.value.resp.status, errors[0]


TOO_LONG = "value too long for type character varying(255)"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a/b", "Name cannot contain a '/' character"),
        (".", "Name cannot be '.' or '..'"),
        ("..", "Name cannot be '.' or '..'"),
        ("n" * 256, TOO_LONG),
    ],
)
def test_the_emulator_refuses_collection_names_as_the_server_does(
    emulator: Any, name: str, message: str
) -> None:
    api = emulator.api(emulator.alice)
    for unique in (False, True):
        status, error = _refusal(
            api.collections().create(
                body={"collection": {"name": name, "manifest_text": ""}},
                ensure_unique_name=unique,
            )
        )
        assert status == 422 and message in error
    status, error = _refusal(
        api.groups().create(body={"group": {"name": name, "group_class": "project"}})
    )
    assert status == 422 and message in error
    fine = api.collections().create(body={"collection": {"name": "fine name"}}).execute()
    status, error = _refusal(api.collections().update(uuid=fine["uuid"], body={"name": name}))
    assert status == 422 and message in error
    api.collections().delete(uuid=fine["uuid"]).execute()


def test_the_emulator_takes_the_longest_names_the_server_takes(emulator: Any) -> None:
    api = emulator.api(emulator.alice)
    made = api.collections().create(body={"collection": {"name": "n" * 255}}).execute()
    assert made["name"] == "n" * 255
    role = api.groups().create(body={"group": {"name": "a/b", "group_class": "role"}})
    assert role.execute()["name"] == "a/b"  # only project and filter names are checked
    link = api.links().create(
        body={"link": {"link_class": "tag", "name": "l" * 255, "head_uuid": made["uuid"]}}
    )
    assert link.execute()["name"] == "l" * 255
    status, error = _refusal(
        api.links().create(
            body={"link": {"link_class": "tag", "name": "l" * 256, "head_uuid": made["uuid"]}}
        )
    )
    assert status == 422 and TOO_LONG in error


def test_the_emulator_refuses_invalid_manifests(emulator: Any) -> None:
    api = emulator.api(emulator.alice)
    for manifest, words in [
        (f". {LOCATOR} 0:3:a/../b\n", 'stream 1: invalid file token "0:3:a/../b"'),
        (f". {LOCATOR} 0:3:f", "Invalid manifest: does not end with newline"),
    ]:
        body = {"collection": {"manifest_text": manifest}}
        status, error = _refusal(api.collections().create(body=body))
        assert status == 422 and error.startswith("Manifest text ") and words in error
