"""The emulator behaves like the real Arvados server where a wrong answer would hide a bug:
long queries, replicas on several keepstores, record validations, and the server's own
Docker image lookup (``Collection.find_all_for_docker_image``, container requests)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import fixture_path, load_truth

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
            body={
                "owner_uuid": owner,
                "name": f"Docker image {image_id}",
                "manifest_text": manifest,
            },
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


def test_in_filters_match_by_equality_whatever_the_values(cluster: Any) -> None:
    """``in`` / ``not in`` look values up in a set (a 10,000-UUID filter must not cost
    10,000 comparisons a record), yet answer as list membership does: a list-valued
    property is in no list of strings, and an operand holding a list still works."""
    api = cluster.api(cluster.alice, num_retries=0)
    made = {
        value_name: api.collections()
        .create(
            body={"name": f"in filter {value_name}", "manifest_text": "", "properties": {"k": v}},
            ensure_unique_name=True,
        )
        .execute()["uuid"]
        for value_name, v in (("text", "b"), ("list", ["a"]), ("number", 1))
    }

    def found(operator: str, operand: list[Any]) -> set[str]:
        filters = [["uuid", "in", sorted(made.values())], ["properties.k", operator, operand]]
        items = api.collections().list(filters=filters).execute()["items"]
        return {name for name, uuid in made.items() if uuid in {i["uuid"] for i in items}}

    assert found("in", ["b", "c"]) == {"text"}
    assert found("in", [1.0]) == {"number"}  # JSON 1.0 == 1, as in a list
    assert found("not in", ["b"]) == {"list", "number"}
    assert found("in", [["a"], "b"]) == {"list", "text"}  # an unhashable operand element


def test_filters_are_read_as_record_filters_reads_them(cluster: Any) -> None:
    """services/api/lib/record_filters.rb: ``exists`` tests a jsonb key's presence
    (``true`` or ``false``), on jsonb columns only; ``in`` takes an array only; ``LIKE``
    escapes with a backslash; ``column.key`` needs a jsonb column.  Anything else is 422."""
    api = cluster.api(cluster.alice, num_retries=0)
    made = {
        label: api.collections()
        .create(
            body={"name": name, "manifest_text": "", "properties": props},
            ensure_unique_name=True,
        )
        .execute()["uuid"]
        for label, name, props in (
            ("null", "filters a_b", {"k": None}),
            ("set", "filters axb", {"k": "v"}),
            ("none", "filters a%b", {}),
        )
    }

    def found(*extra: list[Any]) -> set[str]:
        filters = [["uuid", "in", sorted(made.values())], *extra]
        items = api.collections().list(filters=filters).execute()["items"]
        return {label for label, uuid in made.items() if uuid in {i["uuid"] for i in items}}

    assert found(["properties.k", "exists", True]) == {"null", "set"}  # a null value is there
    assert found(["properties.k", "exists", False]) == {"none"}
    assert found(["properties", "exists", "k"]) == {"null", "set"}
    assert found(["name", "like", "filters a\\_b"]) == {"null"}
    assert found(["name", "like", "filters a\\%b"]) == {"none"}
    assert found(["name", "like", "filters a_b"]) == {"null", "set", "none"}

    def refused(*extra: list[Any]) -> list[str]:
        filters = [["uuid", "in", sorted(made.values())], *extra]
        status, errors = api_error(api.collections().list(filters=filters))
        assert status == 422
        return errors

    assert refused(["name", "exists", True]) == [
        "Invalid attribute 'name' for operator 'exists' in filter"
    ]
    assert refused(["properties.k", "exists", "yes"]) == [
        "Invalid operand 'yes' for 'exists' must be true or false"
    ]
    assert refused(["name", "in", "filters a_b"]) == [
        "Invalid operand type 'String' for 'in' operator in filters"
    ]
    assert refused(["name", "not in", None]) == [
        "Invalid operand type 'NilClass' for 'not in' operator in filters"
    ]
    assert refused(["name.k", "=", "v"]) == ["Invalid attribute 'name' for subproperty filter"]

def test_a_collections_index_leaves_manifest_text_out_unless_selected(cluster: Any) -> None:
    """CollectionsController#load_select_param: ``manifest_text`` only when selected."""
    import arvados

    api = cluster.api(cluster.alice, num_retries=0)
    data = b"index select"
    locator = arvados.KeepClient(api_client=api).put(data, copies=1)
    manifest = f". {locator} 0:{len(data)}:f\n"
    uuid = (
        api.collections()
        .create(body={"name": "index select", "manifest_text": manifest}, ensure_unique_name=True)
        .execute()["uuid"]
    )
    (plain,) = api.collections().list(filters=[["uuid", "=", uuid]]).execute()["items"]
    assert "manifest_text" not in plain and plain["portable_data_hash"]
    (chosen,) = (
        api.collections()
        .list(filters=[["uuid", "=", uuid]], select=["uuid", "manifest_text"])
        .execute()["items"]
    )
    assert re.search(r"\+A[0-9a-f]{40}@[0-9a-f]{8} 0:12:f$", chosen["manifest_text"].strip())

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


# ---- replicas on two keepstores ---------------------------------------------------------


def keepstore_get(port: int, locator: str, token: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"/{locator}", headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def keepstore_put(port: int, path: str, data: bytes, token: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        connection.request("PUT", path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_keepstore_put_is_checked_as_blockwrite_checks_it(cluster: Any) -> None:
    """services/keepstore: the path is the hash, a size hint may follow; a body of
    another hash is 400 (router.handleError of BlockWrite's error), not stored."""
    data = b"keepstore put check"
    md5 = hashlib.md5(data).hexdigest()
    token = cluster.alice.token
    port = cluster.keep_ports[0]
    status, body = keepstore_put(port, f"/{md5}+{len(data)}", data, token)
    assert status == 200 and body.decode().startswith(f"{md5}+{len(data)}+A")
    other = hashlib.md5(b"something else").hexdigest()
    status, body = keepstore_put(port, f"/{other}", data, token)
    assert (status, body) == (
        400,
        f"content hash {md5} did not match specified locator {other}\n".encode(),
    )
    assert not (cluster.block_dirs[0] / other).exists()
    assert keepstore_put(port, "/not-a-hash", data, token)[0] == 400

def test_the_cluster_lists_two_disk_keepstores(cluster: Any) -> None:
    services = cluster.api().keep_services().accessible().execute()["items"]
    assert len(services) == 2 == len({s["service_port"] for s in services})
    assert {s["service_type"] for s in services} == {"disk"}


def test_each_keepstore_reports_the_one_replica_it_stored(cluster: Any) -> None:
    """A keepstore answers ``X-Keep-Replicas-Stored`` with what it wrote (one per volume),
    not the ``X-Keep-Desired-Replicas`` it was asked for."""
    import arvados

    kc = arvados.KeepClient(api_client=cluster.api(cluster.alice), num_retries=0)
    data = os.urandom(2000)
    md5 = hashlib.md5(data).hexdigest()
    locator = f"{md5}+{len(data)}"
    connection = http.client.HTTPConnection("127.0.0.1", cluster.keep_ports[0], timeout=30)
    connection.request(
        "PUT",
        f"/{md5}",
        body=data,
        headers={"Authorization": f"Bearer {cluster.alice.token}", "X-Keep-Desired-Replicas": "3"},
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200
    assert response.getheader("X-Keep-Replicas-Stored") == "1"
    assert response.getheader("X-Keep-Storage-Classes-Confirmed") == "default=1"
    assert kc.get(locator + cluster.sign(md5, cluster.alice.token)) == data


def test_copies_go_to_distinct_keepstores_and_read_back_from_either(cluster: Any) -> None:
    import arvados
    import arvados.errors

    kc = arvados.KeepClient(api_client=cluster.api(cluster.alice), num_retries=0)
    token = cluster.alice.token

    two = os.urandom(3000)
    signed = kc.put(two, copies=2)
    md5 = signed[:32]
    assert [(folder / md5).is_file() for folder in cluster.block_dirs] == [True, True]
    for port in cluster.keep_ports:
        assert keepstore_get(port, signed, token) == (200, two)

    one = os.urandom(3000)
    signed = kc.put(one, copies=1)
    md5 = signed[:32]
    holders = [n for n, folder in enumerate(cluster.block_dirs) if (folder / md5).is_file()]
    assert len(holders) == 1
    (holder,) = holders
    other = 1 - holder
    assert keepstore_get(cluster.keep_ports[holder], signed, token) == (200, one)
    assert keepstore_get(cluster.keep_ports[other], signed, token)[0] == 404
    assert kc.get(signed) == one  # the client tries the services in turn

    with pytest.raises(arvados.errors.KeepWriteError):
        kc.put(os.urandom(100), copies=3)  # two single-volume keepstores hold two copies


def test_a_loaded_image_has_every_block_on_both_keepstores(cluster: Any) -> None:
    """``defaultCollectionReplication`` is 2: keeptar's KeepClient writes each block to
    both services, and the image reads back from either volume alone."""
    from keeptar.backends.arvados import ArvadosBackend
    from keeptar.keep import parse_manifest
    from keeptar.load import load_image

    source = fixture_path("docker-v2-app.tar")
    with cluster.environment(cluster.alice):
        backend = ArvadosBackend()
        result = load_image(backend, str(source), tag="kt/replicas:1", force=True)
        manifest = backend.get_collection(result.uuid)["manifest_text"]
    md5s = {s.locator[:32] for item in parse_manifest(manifest) for s in item.segments}
    assert md5s
    for folder in cluster.block_dirs:
        for md5 in md5s:
            assert hashlib.md5((folder / md5).read_bytes()).hexdigest() == md5, folder


# ---- records: head_uuid, owners, trash, users' can_write ---------------------------------


def api_error(request: Any) -> tuple[int, list[str]]:
    """Execute *request*, expecting an API error: its status and its ``errors``.

    The server ends each message with `` (<X-Request-Id>)`` (``send_error``); that
    suffix is checked and cut off, so messages compare as the models write them.
    """
    import arvados.errors

    with pytest.raises(arvados.errors.ApiError) as caught:
        request.execute(num_retries=0)
    errors: list[str] = json.loads(caught.value.content)["errors"]
    assert all(re.search(r" \(req-[0-9a-z]+\)$", e) for e in errors), errors
    return caught.value.resp.status, [re.sub(r" \(req-[0-9a-z]+\)$", "", e) for e in errors]


def new_collection(api: Any, owner: str | None = None, name: str = "c") -> str:
    body = {"name": name, "manifest_text": ""}
    if owner:
        body["owner_uuid"] = owner
    return str(api.collections().create(body=body, ensure_unique_name=True).execute()["uuid"])


def test_an_update_that_clashes_is_refused_for_a_rename_or_a_move(cluster: Any) -> None:
    """The unique (owner_uuid, name) index holds on update, for a new name or a new
    owner (ApplicationController#update: ``update!``, no ``ensure_unique_name``)."""
    alice = cluster.api(cluster.alice, num_retries=0)
    taken = alice.collections().get(uuid=new_collection(alice, name="clash")).execute()["name"]
    other = new_collection(alice, name="clash other")
    status, errors = api_error(alice.collections().update(uuid=other, body={"name": taken}))
    assert status == 422 and "RecordNotUnique" in errors[0], errors
    project = cluster.alice_project["uuid"]
    in_project = new_collection(alice, owner=project, name="clash moved")
    moved_name = alice.collections().get(uuid=in_project).execute()["name"]
    alice.collections().update(uuid=other, body={"name": moved_name}).execute()
    status, errors = api_error(alice.collections().update(uuid=other, body={"owner_uuid": project}))
    assert status == 422 and "RecordNotUnique" in errors[0], errors

def test_a_link_head_must_exist_and_be_readable(cluster: Any) -> None:
    """``ArvadosModel#ensure_valid_uuids``: 422 ``Head uuid '…' not found``."""
    alice = cluster.api(cluster.alice, num_retries=0)
    bobs = new_collection(cluster.api(cluster.bob), name="bob's")
    missing = f"{cluster.uuid_prefix}-4zz18-{'0' * 15}"
    for head in (missing, bobs):
        status, errors = api_error(
            alice.links().create(
                body={"link_class": "docker_image_repo+tag", "name": "x:1", "head_uuid": head}
            )
        )
        assert (status, errors) == (422, [f"Head uuid '{head}' not found"])
    mine = new_collection(alice)
    link = (
        alice.links()
        .create(body={"link_class": "docker_image_repo+tag", "name": "x:1", "head_uuid": mine})
        .execute()
    )
    assert link["head_uuid"] == mine
    status, errors = api_error(alice.links().update(uuid=link["uuid"], body={"head_uuid": bobs}))
    assert (status, errors) == (422, [f"Head uuid '{bobs}' not found"])
    # A PDH is no UUID: not checked (docker_image_migration links use them).
    pdh = "d41d8cd98f00b204e9800998ecf8427e+0"
    alice.links().create(
        body={"link_class": "docker_image_migration", "head_uuid": pdh, "tail_uuid": pdh}
    ).execute()


def test_owners_are_users_or_projects_the_caller_can_write(cluster: Any) -> None:
    alice = cluster.api(cluster.alice, num_retries=0)
    mine = new_collection(alice)
    status, errors = api_error(
        alice.collections().create(body={"name": "in a collection", "owner_uuid": mine})
    )
    assert (status, errors) == (403, ["Owner uuid must be set to User or Group"])
    status, errors = api_error(
        alice.collections().create(
            body={"name": "in bob's project", "owner_uuid": cluster.bob_project["uuid"]}
        )
    )
    assert status == 422  # not even readable: the validation answers first
    assert errors == [f"Owner uuid '{cluster.bob_project['uuid']}' not found"]
    cluster.share(cluster.bob_project["uuid"], cluster.alice, "can_read")
    status, errors = api_error(
        alice.collections().create(
            body={"name": "in bob's project", "owner_uuid": cluster.bob_project["uuid"]}
        )
    )
    assert (status, errors) == (
        403,
        ["Owner uuid cannot be set or changed without write permission on new owner"],
    )
    status, errors = api_error(
        alice.collections().update(uuid=mine, body={"owner_uuid": cluster.bob.uuid})
    )
    assert status == 403
    moved = (
        alice.collections()
        .update(uuid=mine, body={"owner_uuid": cluster.alice_project["uuid"]})
        .execute()
    )
    assert moved["owner_uuid"] == cluster.alice_project["uuid"]


def test_the_contents_of_a_trashed_project_are_hidden(cluster: Any) -> None:
    """``readable_by``'s ``excluded_trash``: whatever a trashed project (or a project
    inside it) owns is left out of gets, lists and link checks, for admins too."""
    for account in (cluster.alice, cluster.admin):
        api = cluster.api(account, num_retries=0)
        project = (
            api.groups()
            .create(
                body={
                    "name": "to trash",
                    "group_class": "project",
                    "owner_uuid": cluster.alice.uuid,
                },
                ensure_unique_name=True,
            )
            .execute()["uuid"]
        )
        inner = (
            api.groups()
            .create(body={"name": "inner", "group_class": "project", "owner_uuid": project})
            .execute()["uuid"]
        )
        deep = new_collection(api, inner, "deep")
        shallow = new_collection(api, project, "shallow")
        link = (
            api.links()
            .create(
                body={
                    "owner_uuid": project,
                    "link_class": "docker_image_hash",
                    "name": fake_image_id("trash"),
                    "head_uuid": shallow,
                }
            )
            .execute()["uuid"]
        )
        api.groups().delete(uuid=project).execute()
        for uuid in (deep, shallow):
            assert api_error(api.collections().get(uuid=uuid))[0] == 404
        listed = api.collections().list(filters=[["uuid", "in", [deep, shallow]]]).execute()
        assert listed["items"] == []
        assert api.links().list(filters=[["uuid", "=", link]]).execute()["items"] == []
        assert api_error(api.groups().get(uuid=inner))[0] == 404
        status, errors = api_error(
            api.links().create(
                body={"link_class": "docker_image_repo+tag", "name": "t:1", "head_uuid": deep}
            )
        )
        assert (status, errors) == (422, [f"Head uuid '{deep}' not found"])


def test_user_records_carry_can_write(cluster: Any) -> None:
    """``User`` is served with ``can_write``/``can_manage`` (``current_user.can?``):
    yourself, or a user whose permission link grants it; admins everyone."""
    from arvados_emulator import UserAccount

    carol = UserAccount(
        f"{cluster.uuid_prefix}-tpzed-carol0000000000", "caroltoken" + os.urandom(8).hex(), "C X"
    )
    cluster.accounts[carol.token] = carol
    cluster.tables["users"][carol.uuid] = {
        **cluster.tables["users"][cluster.bob.uuid],
        "uuid": carol.uuid,
        "full_name": "Carol X",
    }
    api = cluster.api(carol)
    me = api.users().get(uuid=carol.uuid).execute()
    assert (me["can_write"], me["can_manage"]) == (True, True)
    other = api.users().get(uuid=cluster.alice.uuid).execute()
    assert (other["can_write"], other["can_manage"]) == (False, False)
    cluster.share(cluster.alice.uuid, carol, "can_write")
    other = api.users().get(uuid=cluster.alice.uuid).execute()
    assert (other["can_write"], other["can_manage"]) == (True, False)
    assert api.users().current().execute()["can_write"] is True
    admin_view = cluster.api().users().get(uuid=cluster.bob.uuid).execute()
    assert (admin_view["can_write"], admin_view["can_manage"]) == (True, True)


# ---- the server's own image lookup: container requests ----------------------------------

INCOMPATIBLE = (
    "#<ArvadosModel::UnresolvableContainerError: Matching Docker image is incompatible "
    "with 'docker_image_formats' configuration.>"
)


def request_body(image: str, state: str = "Committed") -> dict[str, Any]:
    return {
        "name": "run it",
        "state": state,
        "container_image": image,
        "command": ["true"],
        "output_path": "/out",
        "mounts": {"/out": {"kind": "tmp", "capacity": 1 << 20}},
        "runtime_constraints": {"vcpus": 1, "ram": 1 << 28},
        "priority": 1,
    }


def run_image(api: Any, image: str) -> str:
    """Commit a container request for *image* through the SDK; the PDH its container got."""
    request = api.container_requests().create(body=request_body(image)).execute(num_retries=0)
    assert request["container_image"] == image  # the request keeps what was asked
    again = api.container_requests().get(uuid=request["uuid"]).execute()
    assert again["container_uuid"] == request["container_uuid"] is not None
    container = api.containers().get(uuid=request["container_uuid"]).execute()
    assert container["state"] == "Queued"
    return str(container["container_image"])


def refused(api: Any, image: str) -> tuple[int, list[str]]:
    return api_error(api.container_requests().create(body=request_body(image)))


def keeptar_load(cluster: Any, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "keeptar", "load", "--json", *args],
        capture_output=True,
        env={**os.environ, **cluster.env(cluster.alice)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_container_request_runs_the_image_keeptar_loaded(cluster: Any) -> None:
    """The server resolves ``container_image`` (a name or a PDH) to the collection keeptar
    stored: the check that the cluster would run the image, not only that keeptar says so."""
    api = cluster.api(cluster.alice)
    loaded = keeptar_load(cluster, "--tag", "kt/served:1", str(fixture_path("docker-v2-app.tar")))
    pdh = loaded["portable_data_hash"]
    assert run_image(api, "kt/served:1") == pdh
    assert run_image(api, pdh) == pdh
    # Keep::Locator.parse's ^ (Ruby) starts any line: a locator on a later line counts.
    assert run_image(api, f"kt/served:1\n{pdh}") == pdh
    # A registry with a port: the server splits at the first ':' and joins the two
    # halves again, so the name as typed resolves (arvados-cwl-runner's does not).
    qualified = "registry.example.com:5000/ns/served:1"
    again = keeptar_load(cluster, "--tag", qualified, str(fixture_path("docker-v2-app.tar")))
    assert again["portable_data_hash"] == pdh
    assert run_image(api, qualified) == pdh
    # Uncommitted: accepted as typed, nothing resolved yet (set_container runs on commit).
    draft = api.container_requests().create(body=request_body("kt/nothing:1", "Uncommitted"))
    assert draft.execute()["container_uuid"] is None
    assert refused(api, "kt/nothing:1") == (
        422,
        ['#<ArvadosModel::UnresolvableContainerError: docker image "kt/nothing:1" not found>'],
    )
    assert refused(api, "kt/served") == (  # the tag defaults to latest
        422,
        ['#<ArvadosModel::UnresolvableContainerError: docker image "kt/served" not found>'],
    )


def test_the_server_refuses_images_it_could_not_run(cluster: Any) -> None:
    """Two ``.tar`` files, or a v1 file name on a v2-only cluster: the names match but
    ``get_compatible_images`` drops the collection, and the request is refused."""
    api = cluster.api(cluster.alice)
    home = cluster.alice_project["uuid"]
    two = fake_image_id("two-tars")
    manifest_name = f"{two}.tar 0:0:{fake_image_id('other')}.tar"
    register_image(api, home, two, ["kt/two-tars:1"], "2024-01-01T00:00:00Z", manifest_name)
    assert refused(api, "kt/two-tars:1") == (422, [INCOMPATIBLE])

    v1 = fake_image_id("v1-only").removeprefix("sha256:")
    v1_collection = register_image(
        api, home, v1, ["kt/v1-only:1"], "2024-01-01T00:00:00Z", f"{v1}.tar"
    )
    assert refused(api, "kt/v1-only:1") == (422, [INCOMPATIBLE])
    assert refused(api, v1_collection["portable_data_hash"]) == (
        422,
        [
            "#<ArvadosModel::UnresolvableContainerError: docker image "
            f'"{v1_collection["portable_data_hash"]}" not found>'
        ],
    )
    # A docker_image_migration link (made by an admin, owned by the system user) leads
    # from the v1 collection to a v2 one: the server then runs that one.
    v2 = register_image(api, home, fake_image_id("v1-migrated"), [], "2024-01-01T00:00:00Z")
    cluster.api().links().create(
        body={
            "owner_uuid": cluster.system_user,
            "link_class": "docker_image_migration",
            "name": "migrate v1->v2",
            "tail_uuid": v1_collection["portable_data_hash"],
            "head_uuid": v2["portable_data_hash"],
        }
    ).execute()
    assert run_image(api, "kt/v1-only:1") == v2["portable_data_hash"]


def test_the_server_prefers_the_newest_image_timestamp_then_the_newest_link(
    cluster: Any,
) -> None:
    api = cluster.api(cluster.alice)
    home = cluster.alice_project["uuid"]
    name = "kt/preference:1"
    newest = register_image(api, home, fake_image_id("p-new"), [name], "2024-05-01T00:00:00Z")
    register_image(api, home, fake_image_id("p-old"), [name], "2023-01-01T00:00:00Z")
    register_image(api, home, fake_image_id("p-none"), [name], "not a time")
    assert run_image(api, name) == newest["portable_data_hash"]
    # Someone else's newer image of that name is not readable: not a candidate.
    register_image(
        cluster.api(cluster.bob),
        cluster.bob.uuid,
        fake_image_id("p-bob"),
        [name],
        "2025-01-01T00:00:00Z",
    )
    assert run_image(api, name) == newest["portable_data_hash"]
    # Equal image timestamps: the newest link wins (whole seconds).
    tie = "kt/tie:1"
    register_image(api, home, fake_image_id("t-1"), [tie], "2024-01-01T00:00:00Z")
    time.sleep(1.1)
    later = register_image(api, home, fake_image_id("t-2"), [tie], "2024-01-01T00:00:00Z")
    assert run_image(api, tie) == later["portable_data_hash"]


def test_a_v1_image_runs_on_a_cluster_that_accepts_v1() -> None:
    from arvados_emulator import Emulator

    with Emulator(docker_image_formats=["v1", "v2"]) as both:
        api = both.api(both.alice)
        v1 = fake_image_id("v1-ok").removeprefix("sha256:")
        stored = register_image(
            api, both.alice.uuid, v1, ["kt/v1-ok:1"], "2024-01-01T00:00:00Z", f"{v1}.tar"
        )
        assert run_image(api, "kt/v1-ok:1") == stored["portable_data_hash"]


def test_link_classes_the_server_validates(cluster: Any) -> None:
    """link.rb: name links are obsolete; a permission link names a level, goes to a user,
    and needs can_manage on its head."""
    alice = cluster.api(cluster.alice, num_retries=0)
    mine = new_collection(alice)
    assert api_error(
        alice.links().create(body={"link_class": "name", "name": "n", "head_uuid": mine})
    ) == (422, ["Name Name links are obsolete"])
    share = {"link_class": "permission", "head_uuid": mine, "tail_uuid": cluster.bob.uuid}
    assert api_error(alice.links().create(body={**share, "name": "can_fly"})) == (
        422,
        [
            "Name is invalid permission, must be one of 'can_read', 'can_write', "
            "'can_manage', 'can_login'"
        ],
    )
    project = cluster.alice_project["uuid"]
    assert api_error(
        alice.links().create(body={**share, "name": "can_read", "tail_uuid": project})
    ) == (422, ["Tail uuid must be a user or role, was group with group_class project"])
    granted = alice.links().create(body={**share, "name": "can_read"}).execute()
    assert granted["owner_uuid"] == cluster.system_user
    bobs = new_collection(cluster.api(cluster.bob))
    cluster.share(bobs, cluster.alice, "can_read")
    status, _ = api_error(
        alice.links().create(
            body={**share, "name": "can_read", "head_uuid": bobs, "tail_uuid": cluster.alice.uuid}
        )
    )
    assert status == 403  # reading is not managing
