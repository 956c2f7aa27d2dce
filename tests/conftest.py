"""Shared paths and helpers for keeptar's tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
SHARED = Path(os.environ.get("KEEPTAR_SHARED", TESTS.parent.parent / "shared")) / "fixtures"


def fixture_path(name: str) -> Path:
    """Find a fixture by file name in tests/fixtures or ../shared/fixtures[/public].

    A fixture that is not in tests/fixtures skips the test when the shared
    fixture directory is absent (set KEEPTAR_SHARED to point at it); if that
    directory is there but lacks the file, it is an error.
    """
    for folder in (FIXTURES, SHARED, SHARED / "public"):
        if (folder / name).is_file():
            return folder / name
    if not SHARED.is_dir():
        pytest.skip(
            f"needs the shared fixture {name}, but {SHARED} is absent (set KEEPTAR_SHARED)",
            allow_module_level=True,
        )
    raise FileNotFoundError(name)


def load_truth() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / "truth.json").read_text())
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def run_keeptar(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None, stdin: Any = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "keeptar", *args],
        input=input,
        stdin=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def docker_load(env: dict[str, str], archive: Path, image: str, *, rename: str = "") -> str:
    """``docker load`` *archive* into the daemon *env*'s ``DOCKER_HOST`` names; return *image*.

    With *rename* (a repository prefix such as ``"kt/push"``), *image* is tagged anew as
    ``RENAME<6 hex>:v1``, a name no other test registered, and that name is returned.
    """
    subprocess.run(
        ["docker", "load", "-q", "-i", str(archive)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    if not rename:
        return image
    reference = f"{rename}{os.urandom(3).hex()}:v1"
    subprocess.run(["docker", "tag", image, reference], env=env, check=True, timeout=60)
    return reference


def keep_puts(emu: Any) -> int:
    """How many block PUTs the emulator's keepstores have served (0 without an emulator)."""
    if emu is None:
        return 0
    return sum(1 for method, path in emu.requests if method == "PUT" and path == "/keep/")


def docker_image_id(env: dict[str, str], reference: str) -> str:
    """The image ID the daemon *env* names gives *reference* (``docker image inspect``)."""
    return subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", reference],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def arv_keepdocker(env: dict[str, str], reference: str) -> str:
    """Store the daemon's image *reference* (``REPO:TAG``) with the real
    ``arv-keepdocker --force --no-resume``; return the collection UUID it prints."""
    repo, tag = reference.rsplit(":", 1)
    upstream = subprocess.run(
        ["arv-keepdocker", "--force", "--no-resume", repo, tag],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert upstream.returncode == 0, upstream.stderr
    return upstream.stdout.strip().splitlines()[-1]


def add_migration_link(
    backend: Any, request: pytest.FixtureRequest, old_pdh: str, new_pdh: str
) -> tuple[dict[str, str], Any]:
    """Add the link ``arv-migrate-docker19`` leaves: from *old_pdh* (a v1 image) to
    *new_pdh*, owned by the system user, added as an admin adds it.

    Returns the link's fields and a backend that can read it: *backend* itself on the
    embedded store, the admin's on Arvados (a user does not see the system user's link).
    """
    migration = {
        "link_class": "docker_image_migration",
        "name": "migrate_1.9_1.10",
        "tail_uuid": old_pdh,
        "head_uuid": new_pdh,
        "owner_uuid": f"{backend.server_facts().uuid_prefix}-tpzed-000000000000000",
    }
    if backend.kind == "local":
        backend.create_link(properties={}, **migration)
        return migration, backend
    from keeptar.backends.arvados import ArvadosBackend

    emu = request.getfixturevalue("emulator")
    emu.api(emu.admin).links().create(body={"link": migration}).execute()
    with emu.environment(emu.admin):
        return migration, ArvadosBackend()


@pytest.fixture(scope="session")
def truth() -> dict[str, Any]:
    return load_truth()


@pytest.fixture(scope="session")
def emulator():  # type: ignore[no-untyped-def]
    """One emulated Arvados cluster for the whole session."""
    from arvados_emulator import Emulator

    with Emulator() as emu:
        yield emu


@pytest.fixture
def local_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh embedded store, selected through KEEPTAR_HOME; no cluster configured."""
    home = tmp_path / "keeptar-home"
    monkeypatch.setenv("KEEPTAR_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    for key in ("ARVADOS_API_HOST", "ARVADOS_API_TOKEN", "KEEPTAR_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    return home


@pytest.fixture(params=["local", "arvados"])
def backend(request: pytest.FixtureRequest, local_home: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Each backend in turn: the embedded store, and Arvados over the emulator (as Alice)."""
    if request.param == "local":
        from keeptar.backends.embedded import EmbeddedBackend

        yield EmbeddedBackend(local_home)
        return
    emu = request.getfixturevalue("emulator")
    for key, value in emu.env(emu.alice).items():
        monkeypatch.setenv(key, value)
    from keeptar.backends.arvados import ArvadosBackend

    yield ArvadosBackend()


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A Docker daemon: DOCKER_HOST if it answers, else a private vfs dockerd (needs root)."""
    import shutil
    import time

    if (
        os.environ.get("DOCKER_HOST")
        and subprocess.run(["docker", "version"], capture_output=True).returncode == 0
    ):
        yield os.environ["DOCKER_HOST"]
        return
    if shutil.which("dockerd") is None:
        pytest.fail("these tests need Docker: install docker.io (see .ci/run)")
    root = tmp_path_factory.mktemp("dockerd")
    host = f"unix://{root}/docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen(
        [
            "dockerd",
            "--storage-driver=vfs",
            "--iptables=false",
            "--bridge=none",
            "--ip-masq=false",
            f"--data-root={root}/data",
            f"--exec-root={root}/exec",
            f"--host={host}",
            f"--pidfile={root}/dockerd.pid",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TZ": "UTC"},
    )
    env = {**os.environ, "DOCKER_HOST": host}
    for _ in range(120):
        if subprocess.run(["docker", "version"], capture_output=True, env=env).returncode == 0:
            break
        time.sleep(0.5)
    else:
        daemon.terminate()
        pytest.fail("dockerd did not start: " + (root / "dockerd.log").read_text()[-2000:])
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    try:
        yield host
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        daemon.terminate()
        daemon.wait(timeout=60)
        log.close()
