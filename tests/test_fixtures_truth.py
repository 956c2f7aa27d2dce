"""keeptar's reading of real archives agrees with what skopeo and docker say about them.

truth.json was written by tests/fixtures/make-fixtures.sh from `skopeo
inspect` and `docker load` + `docker image inspect`; nothing in it comes from
keeptar.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import fixture_path, load_truth, run_keeptar
from keeptar import ArchiveError, inspect_archive

# Which layout each producer writes (a fact about the producer, not a reading).
EXPECTED_FORMAT = {
    "arvados-hello-world-docker25.tar": "docker-oci",
    "arvados-hello-world-v2.tar": "docker-v2",
    "buildah-docker-archive.tar": "docker-archive",
    "containers-image-almostempty.tar": "docker-v2",
    "crane-app.tar": "crane",
    "docker-v1-app.tar": "docker-v1",
    "docker-v2-app.tar": "docker-v2",
    "docker-v2-app.tar.bz2": "docker-v2",
    "docker-v2-app.tar.gz": "docker-v2",
    "docker-v2-app.tar.xz": "docker-v2",
    "docker-v2-app.tar.zst": "docker-v2",
    "docker-v2-two-images.tar": "docker-v2",
    "docker-v2-untagged.tar": "docker-v2",
    "ggcr-hello-world-v25.tar": "docker-oci",
    "ggcr-test-bundle.tar": "docker-v2",
    "ggcr-test-link.tar": "docker-v2",
    "podman-docker-two-images.tar.xz": "docker-v2",
    "podman-docker-unnamed.tar.xz": "docker-v2",
    "podman-oci-archive.tar": "oci-archive",
    "podman-oci-non-docker-name.tar.gz": "oci-archive",
    "podman-two-images.tar": "docker-archive",
    "rules-docker-symlinked-layer.tar": "docker-v2",
    "skopeo-docker-archive.tar": "docker-archive",
    "skopeo-oci-archive.tar": "oci-archive",
    "v1-moby-emptylayer.tar": "docker-v1",
}
BAD_INPUTS = {"ggcr-null-manifest.tar"}
TRUTH = load_truth()
GOOD = sorted(name for name in TRUTH if name not in BAD_INPUTS)


def familiar(tag: str) -> str:
    """Docker's short form of a reference, as `docker image inspect` shows RepoTags."""
    return tag.removeprefix("docker.io/").removeprefix("library/")


def test_every_fixture_has_an_expected_format() -> None:
    assert set(GOOD) == set(EXPECTED_FORMAT)


@pytest.mark.parametrize("name", GOOD)
@pytest.mark.parametrize("verify", [False, True], ids=["skip-layers", "verify"])
def test_inspect_matches_the_tools(name: str, verify: bool) -> None:
    facts: dict[str, Any] = TRUTH[name]
    info = inspect_archive(fixture_path(name), verify=verify)
    assert info.format.value == EXPECTED_FORMAT[name]
    ours = {image.id: image for image in info.images}
    if info.format.is_v1:
        # skopeo cannot read v1; the top IDs come from the archive's repositories file.
        assert list(ours) == facts["v1_tops"]
        (image,) = info.images
        (loaded,) = facts["docker"]
        assert image.created == loaded["created"]
        assert list(image.repo_tags) == loaded["repo_tags"]
        if verify:  # v1 diff IDs are computed, and must be the ones docker computed on load
            assert [layer.diff_id for layer in image.layers] == loaded["diff_ids"]
        return
    if facts["images"]:
        assert [image.id for image in info.images] == [img["id"] for img in facts["images"]]
    else:
        # skopeo could not read it (containers/image rejects multi-member gzip): use docker's.
        assert sorted(ours) == sorted(img["id"] for img in facts["docker"])
        for loaded in facts["docker"]:
            assert ours[loaded["id"]].created == loaded["created"]
    for expected in facts["images"]:
        image = ours[expected["id"]]
        assert image.created == expected["created"]
        assert image.architecture == expected["architecture"]
        assert image.os == expected["os"]
        assert [layer.diff_id for layer in image.layers] == expected["diff_ids"]
    for loaded in facts["docker"]:
        assert loaded["id"] in ours
        assert {familiar(t) for t in ours[loaded["id"]].repo_tags} <= set(loaded["repo_tags"])
        assert [layer.diff_id for layer in ours[loaded["id"]].layers] == loaded["diff_ids"]


@pytest.mark.parametrize("name", ["docker-v2-two-images.tar", "podman-two-images.tar"])
def test_tagged_images_keep_their_docker_tags(name: str) -> None:
    info = inspect_archive(fixture_path(name))
    for loaded in TRUTH[name]["docker"]:
        image = next(i for i in info.images if i.id == loaded["id"])
        assert sorted(familiar(t) for t in image.repo_tags) == loaded["repo_tags"]


def test_null_manifest_is_refused() -> None:
    with pytest.raises(ArchiveError, match=r"manifest\.json"):
        inspect_archive(fixture_path("ggcr-null-manifest.tar"))


@pytest.mark.parametrize(
    "name", ["docker-v2-app.tar.zst", "podman-oci-archive.tar", "docker-v1-app.tar"]
)
def test_cli_json_matches_the_api(name: str) -> None:
    import json

    result = run_keeptar("inspect", "--json", "--verify", str(fixture_path(name)))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    info = inspect_archive(fixture_path(name), verify=True)
    assert doc == info.to_json()
    assert doc["format"] == EXPECTED_FORMAT[name]


def test_cli_reads_stdin() -> None:
    path = fixture_path("docker-v2-app.tar.gz")
    with open(path, "rb") as stream:
        result = run_keeptar("inspect", "--json", "-", stdin=stream)
    assert result.returncode == 0, result.stderr
    import json

    doc = json.loads(result.stdout)
    assert doc["compression"] == "gzip"
    assert doc["images"][0]["id"] == TRUTH["docker-v2-app.tar.gz"]["docker"][0]["id"]
