"""Registration is never doubled and never half-done (issue 8 §1), and reuse details (issue 9 §5).

Everything is checked on the server side: the embedded store's SQLite catalog
read directly, or the emulator's own records, never the client's view.  Kills
and interrupts come from a test harness around the real CLI (a wrapper that
signals its own process after the Nth call of a backend method), or from the
emulator holding an answer while the test presses Ctrl-C.
"""

from __future__ import annotations

import fcntl
import json
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_load import unique_image

from conftest import fixture_path, load_truth, run_keeptar

TRUTH = load_truth()
BUILDAH = fixture_path("buildah-docker-archive.tar")  # two RepoTags: one image, three links
BUILDAH_TAGS = sorted(TRUTH["buildah-docker-archive.tar"]["docker"][0]["repo_tags"])  # docker's
with tarfile.open(BUILDAH) as _tar:  # as the archive writes them
    BUILDAH_RAW_TAGS = json.load(_tar.extractfile("manifest.json"))[0]["RepoTags"]  # type: ignore[arg-type]

# Runs the real CLI with one backend method wrapped: after its Nth call returns, the
# process sends itself a signal (SIGKILL: a crash; SIGINT: Ctrl-C), before the caller
# sees the answer.  Test harness only: nothing in keeptar knows about it.
_HARNESS = """
import os, signal, sys
module, cls, method, after, sig = sys.argv[1:6]
backend_class = getattr(__import__(module, fromlist=[cls]), cls)
original = getattr(backend_class, method)
calls = [0]
def wrapped(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    calls[0] += 1
    if calls[0] == int(after):
        os.kill(os.getpid(), getattr(signal, sig))
    return result
setattr(backend_class, method, wrapped)
sys.argv = ["keeptar", *sys.argv[6:]]
from keeptar.cli import main
main()
"""


# Runs the real CLI with a start gate: the first put_block of each process waits
# until *count* processes have reached it, so that they all upload and register at
# the same moment (processes started one after another would seldom overlap).
_GATE = """
import os, sys, threading, time
module, cls, gate, count = sys.argv[1:5]
backend_class = getattr(__import__(module, fromlist=[cls]), cls)
original = backend_class.put_block
lock = threading.Lock()
passed = []
def wrapped(self, data, *, md5=None):
    with lock:
        if not passed:
            open(os.path.join(gate, str(os.getpid())), "w").close()
            deadline = time.monotonic() + 120
            while len(os.listdir(gate)) < int(count) and time.monotonic() < deadline:
                time.sleep(0.005)
            passed.append(True)
    return original(self, data, md5=md5)
backend_class.put_block = wrapped
sys.argv = ["keeptar", *sys.argv[5:]]
from keeptar.cli import main
main()
"""


def image_id_of(path: Path) -> str:
    """The image ID, from the archive's manifest.json as tarfile reads it."""
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    return "sha256:" + manifest[0]["Config"].rsplit("/", 1)[-1].removesuffix(".json")


def server_state(backend: Any, request: pytest.FixtureRequest, image_id: str) -> dict[str, Any]:
    """What the store itself holds for *image_id*: live collections, and every link on
    any collection that ever held it (trashed too) or named with the ID."""
    hexid = image_id.removeprefix("sha256:")
    if backend.kind == "local":
        db = sqlite3.connect(backend.home / "catalog.sqlite3")
        try:
            holders = {
                uuid
                for (uuid,) in db.execute(
                    "SELECT uuid FROM collections WHERE instr(manifest_text, ?) > 0",
                    (f"{hexid}.tar",),
                )
            }
            live = set(holders)
            links = db.execute("SELECT link_class, name, head_uuid FROM links").fetchall()
            # A deleted collection leaves no row: its links are found as dangling ones.
            holders |= {
                head
                for (head,) in db.execute(
                    "SELECT head_uuid FROM links WHERE head_uuid NOT IN "
                    "(SELECT uuid FROM collections)"
                )
            }
        finally:
            db.close()
    else:
        emu = request.getfixturevalue("emulator")
        with emu.lock:
            records = list(emu.tables["collections"].values())
            links = [
                (link["link_class"], link["name"], link["head_uuid"])
                for link in emu.tables["links"].values()
            ]
        holders = {c["uuid"] for c in records if f"{hexid}.tar" in c["manifest_text"]}
        live = {c["uuid"] for c in records if c["uuid"] in holders and not c["is_trashed"]}
    mine = [(c, n, h) for c, n, h in links if h in holders or n == image_id]
    return {
        "collections": sorted(live),
        "links": sorted((c, n) for c, n, _ in mine),
        "heads": sorted({h for _, _, h in mine}),
    }


def assert_one_complete_registration(
    backend: Any, request: pytest.FixtureRequest, image_id: str
) -> None:
    """One collection, its hash link and one repo+tag link per RepoTag, nothing else.

    A name may be registered as the archive writes it or in Docker's short form
    (``docker.io/kt/x`` or ``kt/x``): this checks counts, not the naming rule.
    """
    state = server_state(backend, request, image_id)
    assert len(state["collections"]) == 1, state
    assert state["heads"] == state["collections"], state
    hashes = [name for kind, name in state["links"] if kind == "docker_image_hash"]
    names = [name for kind, name in state["links"] if kind == "docker_image_repo+tag"]
    assert hashes == [image_id], state
    assert len(names) == len(set(names)) == len(BUILDAH_TAGS), state
    assert all(name in BUILDAH_RAW_TAGS or name in BUILDAH_TAGS for name in names), state
    assert len(state["links"]) == 1 + len(BUILDAH_TAGS), state


#: Each call of one registration (the backend method, and which call of it): the
#: collection, the hash link, then one repo+tag link per BUILDAH_TAGS entry.
REGISTRATION_CALLS = [
    ("create_collection", 1),
    *(("create_link", n) for n in range(1, 2 + len(BUILDAH_TAGS))),
]


def backend_class(backend: Any) -> tuple[str, str]:
    if backend.kind == "local":
        return "keeptar.backends.embedded", "EmbeddedBackend"
    return "keeptar.backends.arvados", "ArvadosBackend"


def harness(
    backend: Any, method: str, after: int, sig: str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    module, cls = backend_class(backend)
    return subprocess.run(
        [sys.executable, "-c", _HARNESS, module, cls, method, str(after), sig, *args],
        capture_output=True,
        timeout=300,
    )


# ---- concurrency ---------------------------------------------------------------------------


def test_eight_concurrent_loads_register_once(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(path)
    gate = tmp_path / "gate"
    gate.mkdir()
    module, cls = backend_class(backend)
    command = [sys.executable, "-c", _GATE, module, cls, str(gate), "8"]
    processes = [
        subprocess.Popen(
            [*command, "load", "--no-progress", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [p.returncode for p in processes] == [0] * 8, [err for _, err in outputs]
    assert_one_complete_registration(backend, request, image_id)
    (collection,) = server_state(backend, request, image_id)["collections"]
    assert {out.decode().split()[0] for out, _ in outputs} == {collection}


@pytest.mark.parametrize(
    ("method", "name"),
    [("create_collection", None), ("create_collection", "my image"), ("create_link", None)],
)
def test_a_concurrent_load_that_creates_first_wins_on_arvados(
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    method: str,
    name: str | None,
) -> None:
    """Another load makes the same collection (or link) just before this one does.

    The server refuses the second collection of that name, and this load adopts the
    other's; of two identical links, both loads keep the older one.
    """
    from keeptar.backends.arvados import ArvadosBackend
    from keeptar.load import load_image

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    path = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(path)
    backend, other = ArvadosBackend(), ArvadosBackend()
    original = getattr(backend, method)
    theirs: list[str] = []

    def another_load_first(**kwargs: Any) -> Any:
        theirs.append(getattr(other, method)(**kwargs)["uuid"])
        return original(**kwargs)

    monkeypatch.setattr(backend, method, another_load_first)
    result = load_image(backend, str(path), name=name)
    assert_one_complete_registration(backend, request, image_id)
    if method == "create_collection":
        assert [result.uuid] == theirs
        collection_name = backend.get_collection(result.uuid)["name"]
        if name is not None:
            assert collection_name == name
        else:
            assert collection_name.startswith("Docker image ")
            assert collection_name.endswith(f" {image_id[:12]}")
    else:
        assert len(theirs) == 3
        kept = {link["uuid"] for link in backend.list_links([["head_uuid", "=", result.uuid]])}
        assert kept == set(theirs)


# ---- kill -9 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "after"), REGISTRATION_CALLS)
def test_kill_while_registering_then_rerun_gives_one_registration(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest, method: str, after: int
) -> None:
    path = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(path)
    killed = harness(backend, method, after, "SIGKILL", "load", "--no-progress", str(path))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if backend.kind == "local":  # killed inside the one transaction: nothing was committed
        assert server_state(backend, request, image_id) == {
            "collections": [],
            "links": [],
            "heads": [],
        }
    rerun = run_keeptar("load", "--no-progress", str(path))
    assert rerun.returncode == 0, rerun.stderr
    assert_one_complete_registration(backend, request, image_id)
    again = run_keeptar("load", "--no-progress", str(path))
    assert again.returncode == 0 and again.stdout == rerun.stdout
    assert_one_complete_registration(backend, request, image_id)


# ---- Ctrl-C ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "after"), REGISTRATION_CALLS)
def test_ctrl_c_while_registering_on_the_embedded_store_leaves_nothing(
    local_home: Path, tmp_path: Path, request: pytest.FixtureRequest, method: str, after: int
) -> None:
    from keeptar.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(local_home)
    path = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(path)
    interrupted = harness(backend, method, after, "SIGINT", "load", "--no-progress", str(path))
    assert interrupted.returncode == 130, interrupted.stderr
    assert interrupted.stderr == b"keeptar: error: interrupted\n"
    assert server_state(backend, request, image_id) == {
        "collections": [],
        "links": [],
        "heads": [],
    }
    assert run_keeptar("load", "--no-progress", str(path)).returncode == 0
    assert_one_complete_registration(backend, request, image_id)


@pytest.mark.parametrize(
    ("path", "skip"),
    [
        ("/arvados/v1/collections", 0),  # the collection
        ("/arvados/v1/links", 0),  # the hash link
        ("/arvados/v1/links", 1),  # the first repo+tag link
        ("/arvados/v1/links", 2),  # the last link
    ],
)
def test_ctrl_c_while_registering_on_arvados_leaves_nothing(
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    path: str,
    skip: int,
) -> None:
    """The server has done the request but its answer is late when Ctrl-C comes.

    The rollback must not read that late answer as its own (it uses a fresh
    connection), and must remove what the unanswered request created.
    """
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    archive = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(archive)
    fault = emulator.inject("POST", path, hold=8.0, skip=skip)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "keeptar", "load", "--no-progress", str(archive)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while fault.times and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert fault.times == 0, "the request to interrupt never came"
        time.sleep(0.5)  # the server has carried it out; its answer is held
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        fault.times = 0
    assert process.returncode == 130, err
    assert err == b"keeptar: error: interrupted\n"
    assert time.monotonic() - started < 7  # the rollback did not wait for the held answer
    time.sleep(8.0 - (time.monotonic() - started))  # the held answer is gone for good
    backend = ArvadosBackend()
    assert server_state(backend, request, image_id) == {
        "collections": [],
        "links": [],
        "heads": [],
    }
    assert run_keeptar("load", "--no-progress", str(archive)).returncode == 0
    assert_one_complete_registration(backend, request, image_id)


def test_a_second_ctrl_c_during_the_rollback_names_what_is_left(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Ctrl-C while a link is made, then Ctrl-C again while the rollback deletes: the
    rollback stops, the one-line error names the collection it had not removed, and
    the next load adopts it."""
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    archive = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(archive)
    made = emulator.inject("POST", "/arvados/v1/links", hold=8.0, skip=1)
    deleting = emulator.inject("DELETE", "/arvados/v1/links", delay=8.0)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "keeptar", "load", "--no-progress", str(archive)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while made.times and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert made.times == 0, "the request to interrupt never came"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        while deleting.times and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert deleting.times == 0, "the rollback never started"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        made.times = deleting.times = 0
    time.sleep(9.0)  # the held answer and the delayed delete are done with
    (collection,) = server_state(ArvadosBackend(), request, image_id)["collections"]
    assert process.returncode == 5, err
    message = err.decode()
    assert message.count("\n") == 1, message
    assert message.startswith(
        "keeptar: error: interrupted; could not remove what this load had registered: "
    ), message
    assert collection in message, message
    rerun = run_keeptar("load", "--no-progress", str(archive))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.decode().split()[0] == collection  # adopted, not duplicated
    assert_one_complete_registration(ArvadosBackend(), request, image_id)


def test_a_rollback_keeps_what_a_concurrent_load_adopted_meanwhile(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Load A's hash link is made but its answer is late; load B finds A's collection
    and hash link and completes the registration; then A is interrupted.  A's rollback
    must leave B's registration whole: the collection and the hash link are B's now."""
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    archive = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(archive)
    held = emulator.inject("POST", "/arvados/v1/links", hold=20.0)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "keeptar", "load", "--no-progress", str(archive)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while held.times and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert held.times == 0, "the request to interrupt never came"
        time.sleep(0.5)  # A's hash link is made; its answer is held
        other = run_keeptar("load", "--no-progress", str(archive))
        assert other.returncode == 0, other.stderr
        backend = ArvadosBackend()
        assert_one_complete_registration(backend, request, image_id)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        held.times = 0
    assert process.returncode == 130, err
    assert err == b"keeptar: error: interrupted\n"
    assert_one_complete_registration(backend, request, image_id)
    assert server_state(backend, request, image_id)["collections"] == [
        other.stdout.decode().split()[0]
    ]


# ---- Keep HEAD ---------------------------------------------------------------------------------


def test_a_failing_keep_head_is_an_error_never_a_duplicate(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KEEPTAR_RETRIES", "1")
    path = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(path)
    assert run_keeptar("load", "--no-progress", str(path)).returncode == 0
    backend = ArvadosBackend()
    assert_one_complete_registration(backend, request, image_id)
    heads = sum(1 for method, _ in emulator.requests if method == "HEAD")
    fault = emulator.inject("HEAD", "/keep/", status=500, times=1000)
    try:
        again = run_keeptar("load", "--no-progress", str(path))
    finally:
        fault.times = 0
    assert sum(1 for method, _ in emulator.requests if method == "HEAD") > heads + 1  # retried
    assert again.returncode == 5, again.stderr
    message = again.stderr.decode()
    assert message.startswith("keeptar: error: looking for block ") and message.count("\n") == 1
    assert_one_complete_registration(backend, request, image_id)
    ok = run_keeptar("load", "--no-progress", str(path))  # HEAD answers again: reused
    assert ok.returncode == 0, ok.stderr
    assert_one_complete_registration(backend, request, image_id)


def test_only_a_real_404_means_missing(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from keeptar.backends.arvados import ArvadosBackend
    from keeptar.errors import BackendError

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    backend = ArvadosBackend(num_retries=2)
    locator = backend.put_block(b"keeptar has_block")
    assert backend.has_block(locator)
    # keepstore checks the signature first: only a signed locator can be "not found"
    assert not backend.has_block("0" * 32 + "+17" + emulator.sign("0" * 32, emulator.alice.token))
    with pytest.raises(BackendError, match="looking for block"):
        backend.has_block("0" * 32 + "+17")  # unsigned: keepstore's 400, not a 404
    fault = emulator.inject("HEAD", "/keep/", status=503, times=1)  # one hiccup: retried
    assert backend.has_block(locator) and fault.times == 0
    fault = emulator.inject("HEAD", "/keep/", drop=True, times=100)
    try:
        with pytest.raises(BackendError, match="looking for block"):
            backend.has_block(locator)
    finally:
        fault.times = 0


# ---- the server's duplicate-name answer ------------------------------------------------------


def test_a_name_taken_in_the_project_is_a_conflict_like_the_server_says(emulator: Any) -> None:
    """What the API server answers (ApplicationController#render_error, 422 + the
    RecordNotUnique text) for a second collection of one name without
    ensure_unique_name, and the keeptar error it becomes."""
    import arvados.errors

    from keeptar.backends.arvados import ArvadosBackend
    from keeptar.errors import ConflictError

    api = emulator.api(emulator.alice)
    body = {"name": "keeptar dup name", "owner_uuid": emulator.alice.uuid, "manifest_text": ""}
    api.collections().create(body=body).execute()
    with pytest.raises(arvados.errors.ApiError) as raised:
        api.collections().create(body=body).execute()
    assert raised.value.resp.status == 422
    (error,) = json.loads(raised.value.content)["errors"]
    assert error.startswith(
        "#<ActiveRecord::RecordNotUnique: PG::UniqueViolation: ERROR:  duplicate key value "
        'violates unique constraint "index_collections_on_owner_uuid_and_name"\nDETAIL:  '
        f"Key (owner_uuid, name)=({emulator.alice.uuid}, keeptar dup name) already exists.\n> "
        "(req-"
    )
    with emulator.environment(emulator.alice):
        backend = ArvadosBackend()
        with pytest.raises(ConflictError, match="RecordNotUnique"):
            backend.create_collection(
                manifest_text="",
                name="keeptar dup name",
                owner_uuid=emulator.alice.uuid,
                properties={},
            )
        renamed = backend.create_collection(
            manifest_text="",
            name="keeptar dup name",
            owner_uuid=emulator.alice.uuid,
            properties={},
            ensure_unique_name=True,
        )
        assert renamed["name"] == f"keeptar dup name ({renamed['uuid'][-15:]})"


# ---- issue 9 §5: reusing and copying -----------------------------------------------------------


def _set_link_timestamps(
    backend: Any, request: pytest.FixtureRequest, head: str, stamp: str
) -> None:
    """Change the image_timestamp of the links on *head*, in the store itself."""
    if backend.kind == "local":
        db = sqlite3.connect(backend.home / "catalog.sqlite3")
        with db:
            db.execute(
                "UPDATE links SET properties = ? WHERE head_uuid = ?",
                (json.dumps({"image_timestamp": stamp}), head),
            )
        db.close()
        return
    emu = request.getfixturevalue("emulator")
    with emu.lock:
        for link in emu.tables["links"].values():
            if link["head_uuid"] == head:
                link["properties"] = {"image_timestamp": stamp}


def _other_project(backend: Any, request: pytest.FixtureRequest) -> str:
    if backend.kind == "local":
        project: str = backend.create_project("copies")["uuid"]
        return project
    return str(request.getfixturevalue("emulator").alice_project["uuid"])


def test_a_copy_into_a_project_takes_image_timestamp_from_the_existing_links(
    backend: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = unique_image(BUILDAH, tmp_path)
    first = run_keeptar("load", "--no-progress", str(path))
    assert first.returncode == 0, first.stderr
    home_copy = first.stdout.decode().split()[0]
    stamp = "2001-02-03T04:05:06.789Z"  # e.g. what arv-keepdocker took from `docker inspect`
    _set_link_timestamps(backend, request, home_copy, stamp)
    project = _other_project(backend, request)
    copied = run_keeptar("load", "--no-progress", "--project-uuid", project, str(path))
    assert copied.returncode == 0, copied.stderr
    copy = copied.stdout.decode().split()[0]
    assert copy != home_copy
    links = list(backend.list_links([["head_uuid", "=", copy]]))
    assert len(links) == 3 and {link["owner_uuid"] for link in links} == {project}
    assert [link["properties"] for link in links] == [{"image_timestamp": stamp}] * 3


@pytest.mark.parametrize("kind", ["local", "arvados"])
def test_json_on_the_copy_path_reports_the_stored_copys_format(
    kind: str, local_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """skopeo's docker-archive and oci-archive of one image have one image ID."""
    from arvados_emulator import Emulator

    docker_archive = fixture_path("skopeo-docker-archive.tar")
    oci_archive = fixture_path("skopeo-oci-archive.tar")
    with Emulator() as emu:  # a cluster of its own: no other test's copies to prefer
        if kind == "arvados":
            for key, value in emu.env(emu.alice).items():
                monkeypatch.setenv(key, value)
            project = emu.alice_project["uuid"]
        else:
            from keeptar.backends.embedded import EmbeddedBackend

            project = EmbeddedBackend(local_home).create_project("oci")["uuid"]
        stored = run_keeptar("load", "--json", "--no-progress", str(docker_archive))
        assert stored.returncode == 0, stored.stderr
        assert json.loads(stored.stdout)["format"] == "docker-archive"
        copied = run_keeptar(
            "load", "--json", "--no-progress", "--project-uuid", project, str(oci_archive)
        )
        assert copied.returncode == 0, copied.stderr
        doc = json.loads(copied.stdout)
        assert doc["portable_data_hash"] == json.loads(stored.stdout)["portable_data_hash"]
        assert doc["format"] == "docker-archive"  # what is stored, not what was read


def test_another_users_home_project_follows_the_servers_can_write(
    monkeypatch: pytest.MonkeyPatch, local_home: Path
) -> None:
    from arvados_emulator import Emulator

    with Emulator() as emu:
        for key, value in emu.env(emu.alice).items():
            monkeypatch.setenv(key, value)
        refused = run_keeptar("load", "--no-progress", "--project-uuid", emu.bob.uuid, str(BUILDAH))
        assert refused.returncode == 7, refused.stderr
        assert b"cannot write to project" in refused.stderr
        assert emu.tables["collections"] == {}
        emu.share(emu.bob.uuid, emu.alice, "can_write")  # Bob shares his home with Alice
        assert emu.api(emu.alice).users().get(uuid=emu.bob.uuid).execute()["can_write"] is True
        loaded = run_keeptar("load", "--no-progress", "--project-uuid", emu.bob.uuid, str(BUILDAH))
        assert loaded.returncode == 0, loaded.stderr
        (record,) = emu.tables["collections"].values()
        assert record["owner_uuid"] == emu.bob.uuid


def test_arv_keepdockers_lock_is_held_while_registering(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from keeptar.backends.arvados import ArvadosBackend

    for key, value in emulator.env(emulator.alice).items():
        monkeypatch.setenv(key, value)
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    path = unique_image(BUILDAH, tmp_path)
    image_id = image_id_of(path)
    (cache / "arvados" / "docker").mkdir(parents=True, mode=0o700)
    lock_path = cache / "arvados" / "docker" / f"{image_id}.tar.lock"
    with open(lock_path, "w+") as lock:  # as arv-keepdocker opens and locks it
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = subprocess.Popen(
            [sys.executable, "-m", "keeptar", "load", "--no-progress", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(6)  # long enough to upload this small image and register it
        assert process.poll() is None
        assert server_state(ArvadosBackend(), request, image_id)["collections"] == []
    _, err = process.communicate(timeout=120)  # the lock is released: it goes on
    assert process.returncode == 0, err
    assert_one_complete_registration(ArvadosBackend(), request, image_id)
    assert lock_path.exists()
    # With no lock file, nothing is created and nothing waits.
    (tmp_path / "b").mkdir()
    other = unique_image(BUILDAH, tmp_path / "b")
    assert run_keeptar("load", "--no-progress", str(other)).returncode == 0
    assert not (cache / "arvados" / "docker" / f"{image_id_of(other)}.tar.lock").exists()


def test_rollback_that_cannot_remove_names_what_is_left(
    local_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while registering, and a rollback that fails too: the one-line error
    names the leftover UUID, and the next load adopts and completes it."""
    from arvados_emulator import Emulator

    with Emulator() as emu:
        for key, value in emu.env(emu.alice).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("KEEPTAR_RETRIES", "0")
        path = unique_image(BUILDAH, tmp_path)
        emu.inject("POST", "/arvados/v1/links", status=500, times=1)
        emu.inject("DELETE", "/arvados/v1/collections", status=500, times=1)
        failed = run_keeptar("load", "--no-progress", str(path))
        assert failed.returncode == 5, failed.stderr
        (collection,) = emu.tables["collections"]
        message = failed.stderr.decode()
        assert message.count("\n") == 1 and collection in message, message
        assert "could not remove" in message
        ok = run_keeptar("load", "--no-progress", str(path))
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.decode().split()[0] == collection  # adopted, not duplicated
        assert len(emu.tables["collections"]) == 1
        assert len([x for x in emu.tables["links"].values() if x["head_uuid"] == collection]) == 3
