"""The emulator behaves like the real Arvados server where a wrong answer would hide a bug:
long queries, replicas on several keepstores, record validations, and the server's own
Docker image lookup (``Collection.find_all_for_docker_image``, container requests)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import fixture_path, load_truth, run_keeptar

TRUTH = load_truth()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A cluster of its own: these tests fill it with hundreds of records."""
    from arvados_emulator import Emulator

    with Emulator() as emu:
        yield emu


def fake_image_id(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def register_image(
    api: Any, owner: str, image_id: str, names: list[str], stamp: str, file_name: str = ""
) -> dict[str, Any]:
    """Register an image the way ``arv-keepdocker`` does: a collection holding
    ``<id>.tar``, a ``docker_image_hash`` link and one ``docker_image_repo+tag`` link per name.

    The file is empty (its zero-length block needs no signature): nothing here reads it.
    """
    manifest = f". d41d8cd98f00b204e9800998ecf8427e+0 0:0:{file_name or image_id + '.tar'}\n"
    collection = (
        api.collections()
        .create(
            body={"owner_uuid": owner, "name": f"Docker image {image_id}", "manifest_text": manifest},
            ensure_unique_name=True,
        )
        .execute()
    )
    for link_class, name in [("docker_image_hash", image_id)] + [
        ("docker_image_repo+tag", n) for n in names
    ]:
        api.links().create(
            body={
                "owner_uuid": owner,
                "link_class": link_class,
                "name": name,
                "head_uuid": collection["uuid"],
                "properties": {"image_timestamp": stamp},
            }
        ).execute()
    return dict(collection)


# ---- long list queries (X-Http-Method-Override) ------------------------------------------


def test_a_long_get_resent_as_a_post_form_is_served_as_the_get(cluster: Any) -> None:
    """googleapiclient turns a GET whose URL exceeds 2048 characters into a POST with
    ``X-HTTP-Method-Override: GET`` and the query as a form body (the controller's
    router honours it): the answer is the list, not a new record."""
    api = cluster.api(cluster.alice, num_retries=0)
    uuids = [
        api.collections()
        .create(body={"name": f"long query {n}", "manifest_text": ""}, ensure_unique_name=True)
        .execute()["uuid"]
        for n in range(3)
    ]
    padding = [f"{cluster.uuid_prefix}-4zz18-{n:015d}" for n in range(80)]  # none exist
    request = api.collections().list(filters=[["uuid", "in", uuids + padding]], limit=1000)
    before = len(cluster.tables["collections"])
    started = time.monotonic()
    got = request.execute(num_retries=0)
    assert time.monotonic() - started < 10
    assert sorted(item["uuid"] for item in got["items"]) == sorted(uuids)
    assert len(cluster.tables["collections"]) == before  # routed as a list, not a create
    posts = [r for r in cluster.requests if r == ("POST", "/arvados/v1/collections")]
    assert posts, "the SDK did not resend the long GET as a POST: the test proves nothing"


def test_images_listing_over_hundreds_of_images_agrees_with_list_images_in_arv(
    cluster: Any,
) -> None:
    """`keeptar images` filters on ``uuid in [...]`` and ``head_uuid in [...]``; with a few
    hundred images those URLs pass 2048 characters.  It completes, and lists what
    ``arvados.commands.keepdocker.list_images_in_arv`` lists, in the same order."""
    from arvados.commands.keepdocker import list_images_in_arv

    api = cluster.api(cluster.bob)
    owner = cluster.bob_project["uuid"]
    count = 250
    for n in range(count):
        register_image(
            api,
            owner,
            fake_image_id(f"many-{n}"),
            [f"kt/many-{n}:v1", "kt/everyone:v1"],
            f"2024-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
        )
    env = {**os.environ, **cluster.env(cluster.bob)}
    mark = len(cluster.requests)

    def keeptar_images(*args: str) -> list[tuple[str, str, str, str]]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "keeptar", "images", "--json", *args],
            capture_output=True,
            env=env,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 60
        return [
            (row["repo"], row["tag"], row["image_id"], row["collection"])
            for row in json.loads(done.stdout)
        ]

    def sdk(*args: str) -> list[tuple[str, str, str, str]]:
        return [
            (info["repo"], info["tag"], info["dockerhash"], uuid)
            for uuid, info in list_images_in_arv(api, 0, *args)
        ]

    everything = keeptar_images()
    assert len(everything) == 2 * count
    assert everything == sdk()
    everyone = keeptar_images("kt/everyone:v1")  # head_uuid in [250 UUIDs]
    assert len(everyone) == count
    assert everyone == sdk("kt/everyone", "v1")
    # Only long queries POST here now (no record is created after `mark`):
    for resource in ("collections", "links"):
        assert ("POST", f"/arvados/v1/{resource}") in cluster.requests[mark:], resource
