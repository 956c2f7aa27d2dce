"""The real arvados-python-client against the emulator: the emulator is only worth what
the SDK's own tools accept from it."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture_path


def sdk_env(emulator: Any, account: Any = None, **extra: str) -> dict[str, str]:
    return {**os.environ, **emulator.env(account), **extra}


def test_discovery_document_is_the_real_one_with_cluster_fields(emulator: Any) -> None:
    api = emulator.api()
    root = api._rootDesc
    original = json.loads(
        (Path(__file__).parent / "fixtures" / "arvados-v1-discovery.json").read_text()
    )
    assert root["revision"] == original["revision"] == "20250402"
    assert set(original["resources"]) <= set(root["resources"])
    assert root["uuidPrefix"] == "zzzzz"
    assert root["dockerImageFormats"] == ["v2"]
    assert root["blobSignatureTtl"] == emulator.blob_signature_ttl
    assert root["rootUrl"] == f"https://{emulator.api_host}/"


def test_api_calls(emulator: Any) -> None:
    api = emulator.api(emulator.alice)
    me = api.users().current().execute()
    assert me["uuid"] == emulator.alice.uuid and me["is_admin"] is False
    project = api.groups().get(uuid=emulator.alice_project["uuid"]).execute()
    assert project["can_write"] is True
    created = (
        api.collections()
        .create(
            body={
                "name": "api test",
                "owner_uuid": emulator.alice_project["uuid"],
                "manifest_text": "",
                "properties": {"a": 1},
            },
            ensure_unique_name=True,
        )
        .execute()
    )
    assert created["portable_data_hash"] == "d41d8cd98f00b204e9800998ecf8427e+0"
    got = (
        api.collections()
        .list(filters=[["uuid", "=", created["uuid"]]], select=["uuid", "properties"])
        .execute()
    )
    assert got["items"] == [{"uuid": created["uuid"], "properties": {"a": 1}}]
    api.collections().update(uuid=created["uuid"], body={"properties": {"b": 2}}).execute()
    assert api.collections().get(uuid=created["uuid"]).execute()["properties"] == {"b": 2}


def test_keyset_paging_over_many_links(emulator: Any) -> None:
    import arvados.util

    api = emulator.api()
    head = (
        api.collections()
        .create(body={"name": "paging head", "manifest_text": ""}, ensure_unique_name=True)
        .execute()["uuid"]
    )
    for number in range(25):
        api.links().create(
            body={"link_class": "paging_test", "name": f"n{number:02d}", "head_uuid": head}
        ).execute()
    emulator.max_page_size = 7  # the server's API.MaxItemsPerResponse: forces 4+ pages
    try:
        listed = list(
            arvados.util.keyset_list_all(
                api.links().list, filters=[["link_class", "=", "paging_test"]]
            )
        )
    finally:
        emulator.max_page_size = 1000
    assert sorted(link["name"] for link in listed) == [f"n{n:02d}" for n in range(25)]


def test_keep_client_put_and_get(emulator: Any) -> None:
    import arvados

    kc = arvados.KeepClient(api_client=emulator.api(emulator.alice))
    data = os.urandom(100_000)
    locator = kc.put(data, copies=1)
    assert locator.startswith(f"{hashlib.md5(data).hexdigest()}+{len(data)}+A")
    assert kc.get(locator) == data


def test_keepstore_refuses_unsigned_gets_and_oversized_blocks(emulator: Any) -> None:
    data = b"x" * 10
    md5 = hashlib.md5(data).hexdigest()
    connection = http.client.HTTPConnection("127.0.0.1", emulator.keep_port, timeout=30)
    auth = {"Authorization": f"Bearer {emulator.alice.token}"}
    connection.request("PUT", f"/{md5}", body=data, headers=auth)
    response = connection.getresponse()
    signed = response.read().decode().strip()
    assert response.status == 200 and "+A" in signed
    connection.request("GET", f"/{md5}+10", headers=auth)
    response = connection.getresponse()
    response.read()
    # keepstore's checkLocatorSignature: errInvalidSignature 400, errExpiredSignature and
    # errNoTokenProvided 401, for HEAD as for GET, before it looks for the block.
    assert response.status == 400  # no signature
    for method in ("GET", "HEAD"):
        connection.request(
            method, f"/{signed}", headers={"Authorization": f"Bearer {emulator.bob.token}"}
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 400  # signed for someone else
        expired = f"{md5}+10" + emulator.sign(md5, emulator.alice.token, int(time.time()) - 1)
        connection.request(method, f"/{expired}", headers=auth)
        response = connection.getresponse()
        response.read()
        assert response.status == 401
        connection.request(method, f"/{signed}")
        response = connection.getresponse()
        response.read()
        assert response.status == 401  # no token
        connection.request(method, f"/{signed}", headers=auth)
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    big = b"\0" * ((1 << 26) + 1)
    connection.request("PUT", f"/{hashlib.md5(big).hexdigest()}", body=big, headers=auth)
    response = connection.getresponse()
    response.read()
    assert response.status == 413


def test_manifest_signatures_are_checked_for_non_admins(emulator: Any) -> None:
    import arvados
    from googleapiclient.errors import HttpError

    alice = emulator.api(emulator.alice)
    locator = arvados.KeepClient(api_client=alice).put(b"signed data", copies=1)
    stripped = "+".join(locator.split("+")[:2])
    tampered = locator[:-12] + "0" * 12 if locator[-12:] != "0" * 12 else locator[:-12] + "1" * 12
    for manifest in (f". {stripped} 0:11:f\n", f". {tampered} 0:11:f\n"):
        with pytest.raises(HttpError) as caught:
            alice.collections().create(body={"manifest_text": manifest}).execute(num_retries=0)
        assert caught.value.resp.status == 403
    ok = (
        alice.collections()
        .create(body={"manifest_text": f". {locator} 0:11:f\n"}, ensure_unique_name=True)
        .execute()
    )
    assert "+A" not in ok["portable_data_hash"]
    stored = emulator.tables["collections"][ok["uuid"]]["manifest_text"]
    assert stored == f". {stripped} 0:11:f\n"  # stored without signatures, re-signed on read
    admin_ok = (
        emulator.api()
        .collections()
        .create(body={"manifest_text": f". {stripped} 0:11:f\n"}, ensure_unique_name=True)
        .execute()
    )
    assert admin_ok["portable_data_hash"] == ok["portable_data_hash"]


def test_users_see_only_what_they_own_or_is_shared(emulator: Any) -> None:
    alice, bob = emulator.api(emulator.alice), emulator.api(emulator.bob)
    made = (
        alice.collections()
        .create(
            body={
                "name": "private",
                "manifest_text": "",
                "owner_uuid": emulator.alice_project["uuid"],
            },
            ensure_unique_name=True,
        )
        .execute()
    )

    def visible(api: Any) -> list[str]:
        listed = api.collections().list(filters=[["uuid", "=", made["uuid"]]]).execute()
        return [c["uuid"] for c in listed["items"]]

    assert visible(alice) == [made["uuid"]]
    assert visible(bob) == []
    emulator.share(emulator.alice_project["uuid"], emulator.bob)
    assert visible(bob) == [made["uuid"]]
    from googleapiclient.errors import HttpError

    with pytest.raises(HttpError) as caught:  # read access does not allow writing there
        bob.collections().create(
            body={"name": "x", "manifest_text": "", "owner_uuid": emulator.alice_project["uuid"]}
        ).execute(num_retries=0)
    assert caught.value.resp.status == 403


def test_arv_put_and_arv_get_round_trip(emulator: Any, tmp_path: Path) -> None:
    source = fixture_path("docker-v2-app.tar")
    env = sdk_env(emulator, emulator.alice)
    put = subprocess.run(
        [
            "arv-put",
            "--no-resume",
            "--no-cache",
            "--name",
            f"rt {os.urandom(3).hex()}",
            "--project-uuid",
            emulator.alice_project["uuid"],
            str(source),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert put.returncode == 0, put.stderr
    uuid = put.stdout.strip()
    out = tmp_path / "copy.tar"
    get = subprocess.run(
        ["arv-get", f"{uuid}/{source.name}", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert get.returncode == 0, get.stderr
    assert out.read_bytes() == source.read_bytes()
    pdh = emulator.api(emulator.alice).collections().get(uuid=uuid).execute()["portable_data_hash"]
    by_pdh = subprocess.run(
        ["arv-get", f"{pdh}/{source.name}", "-"], env=env, capture_output=True, timeout=120
    )
    assert by_pdh.returncode == 0 and by_pdh.stdout == source.read_bytes()


def test_list_images_in_arv_on_links_made_through_the_sdk(emulator: Any) -> None:
    from arvados.commands.keepdocker import list_images_in_arv

    api = emulator.api()
    image = "sha256:" + hashlib.sha256(os.urandom(8)).hexdigest()
    repo = f"kt/listing{os.urandom(3).hex()}"
    older = (
        api.collections()
        .create(body={"name": "old", "manifest_text": ""}, ensure_unique_name=True)
        .execute()["uuid"]
    )
    newer = (
        api.collections()
        .create(body={"name": "new", "manifest_text": ""}, ensure_unique_name=True)
        .execute()["uuid"]
    )
    for head, stamp in ((older, "2020-01-01T00:00:00Z"), (newer, "2024-06-01T12:00:00.5Z")):
        for link_class, name in (
            ("docker_image_hash", image),
            ("docker_image_repo+tag", f"{repo}:v1"),
        ):
            api.links().create(
                body={
                    "link_class": link_class,
                    "name": name,
                    "head_uuid": head,
                    "properties": {"image_timestamp": stamp},
                }
            ).execute()
    images = list_images_in_arv(api, 3, repo, "v1")
    assert [uuid for uuid, _ in images] == [newer, older]
    best = images[0][1]
    assert best["dockerhash"] == image and best["repo"] == repo and best["tag"] == "v1"
    assert best["timestamp"].year == 2024


def test_arv_keepdocker_lists_images(emulator: Any) -> None:
    api = emulator.api()
    head = (
        api.collections()
        .create(body={"name": "kd", "manifest_text": ""}, ensure_unique_name=True)
        .execute()["uuid"]
    )
    repo = f"kt/kd{os.urandom(3).hex()}"
    image = "sha256:" + hashlib.sha256(os.urandom(8)).hexdigest()
    api.links().create(
        body={
            "link_class": "docker_image_hash",
            "name": image,
            "head_uuid": head,
            "properties": {"image_timestamp": "2023-01-01T00:00:00Z"},
        }
    ).execute()
    api.links().create(
        body={
            "link_class": "docker_image_repo+tag",
            "name": f"{repo}:latest",
            "head_uuid": head,
            "properties": {"image_timestamp": "2023-01-01T00:00:00Z"},
        }
    ).execute()
    listing = subprocess.run(
        ["arv-keepdocker"], env=sdk_env(emulator), capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith(repo))
    assert row.split()[:4] == [repo, "latest", image[:12], head]  # keepdocker keeps "sha256:"


@pytest.mark.parametrize("fault", ["status", "drop", "delay"])
def test_fault_injection(emulator: Any, fault: str) -> None:
    import arvados

    kc = arvados.KeepClient(api_client=emulator.api(emulator.alice), num_retries=3)
    before = len([r for r in emulator.requests if r == ("PUT", "/keep/")])
    if fault == "status":
        emulator.inject("PUT", "/keep/", status=500, times=2)
    elif fault == "drop":
        emulator.inject("PUT", "/keep/", drop=True, times=1)
    else:
        emulator.inject("PUT", "/keep/", delay=0.5, times=1)
    data = os.urandom(1000)
    locator = kc.put(data, copies=1)
    assert kc.get(locator) == data
    attempts = len([r for r in emulator.requests if r == ("PUT", "/keep/")]) - before
    assert attempts == {"status": 3, "drop": 2, "delay": 1}[fault]
