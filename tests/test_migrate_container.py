"""The migrate19 docker engine, run for real: Docker 20.10's own v1 → v2 conversion in a container.

The engine image is built from docker/migrate19/ by its build.sh (``.ci/run`` does it; here the
session fixture runs it too, which does nothing when the image is current).  Expected image IDs
come from the host dockerd's own legacy ``docker load`` of the v1 archives, and the outputs are
checked by loading them into that dockerd again.  The outer test daemon uses vfs, and this kind
of VM refuses ``--privileged`` ("unable to apply caps"), which the engine's ``auto`` security
mode detects.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import fixture_path
from keeptar.errors import ArchiveError, KeeptarError, NotFoundError, UsageError
from keeptar.formats import ArchiveScanner, read_images
from keeptar.migrate.container import (
    CAPS_FLAGS,
    PRIVILEGED_FLAGS,
    ContainerEngine,
    check_free_space,
    required_space,
)
from keeptar.streaming.sources import ByteSource, run_tar_stream

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "docker" / "migrate19" / "build.sh"
IMAGE = "keeptar/migrate19:test"
MOBY = "v1-moby-emptylayer.tar"
MOBY_ID = "sha256:a9e31d6f186fbbe2468c9961316dba93971266d344ba960f68911df6e29b564c"
TAGS = {MOBY: "matthughes/library-centos:6-2015.03.20", "docker-v1-app.tar": "kt/app:2.0"}
HOST_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"  # the daemon's own 20.10 client


def host_docker(dockerd: str, *args: str, data: bytes | None = None) -> str:
    done = subprocess.run(
        ["docker", *args],
        input=data,
        capture_output=True,
        timeout=300,
        env={"DOCKER_HOST": dockerd, "PATH": HOST_PATH},
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


@pytest.fixture(scope="session")
def engine_image(dockerd: str) -> str:
    """The engine image, built by docker/migrate19/build.sh (skipped where it cannot be built)."""
    done = subprocess.run(
        [str(BUILD)],
        capture_output=True,
        timeout=900,
        env={**os.environ, "DOCKER_HOST": dockerd, "MIGRATE19_IMAGE": IMAGE},
    )
    if done.returncode == 3:
        pytest.skip(done.stderr.decode().strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return IMAGE


@pytest.fixture(scope="session")
def notices() -> list[str]:
    return []


@pytest.fixture(scope="session")
def engine(engine_image: str, notices: list[str]) -> ContainerEngine:
    """The engine with the default (auto) security flags: one shared probe for the session."""
    return ContainerEngine(engine_image, notice=notices.append, security="auto")


def read_all(source: ByteSource) -> bytes:
    out = bytearray()
    while chunk := source.read():
        out += chunk
    return bytes(out)


@pytest.fixture(scope="session")
def converted(engine: ContainerEngine) -> dict[str, bytes]:
    """Each v1 fixture converted once by path (the same bytes are checked several ways)."""
    result = {}
    for name in TAGS:
        with engine.convert(fixture_path(name), name) as source:
            result[name] = read_all(source)
    return result


def config_digest(archive: bytes) -> str:
    """The v2 archive's image ID: sha256 of the config its manifest.json names (tarfile)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert len(manifest) == 1
        config = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
    return "sha256:" + hashlib.sha256(config).hexdigest()


def legacy_load_id(dockerd: str, name: str) -> str:
    """The ID the host dockerd 20.10's own legacy load gives the v1 fixture *name*."""
    host_docker(dockerd, "load", data=fixture_path(name).read_bytes())
    return host_docker(dockerd, "image", "inspect", "-f", "{{.Id}}", TAGS[name])


@pytest.mark.parametrize("name", list(TAGS))
def test_v1_archive_converts_to_dockers_own_id(
    name: str, dockerd: str, converted: dict[str, bytes]
) -> None:
    expected = legacy_load_id(dockerd, name)
    if name == MOBY:
        assert expected == MOBY_ID
    v2 = converted[name]
    assert config_digest(v2) == expected
    # The v2 output loads into the host daemon as the same image, and is saved by ID
    # (RepoTags null, as arv-keepdocker saves).
    loaded = host_docker(dockerd, "load", data=v2)
    assert f"Loaded image ID: {expected}" in loaded.splitlines()
    with tarfile.open(fileobj=io.BytesIO(v2)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] is None


@pytest.mark.parametrize("name", list(TAGS))
def test_output_is_what_the_host_daemon_saves(
    name: str, dockerd: str, converted: dict[str, bytes]
) -> None:
    """Byte for byte what the host dockerd 20.10 (TZ=UTC) saves after its own legacy load.

    ``docker save`` writes the v1-compatibility ``created`` in the daemon's local time, so
    this also guards the inner daemon's ``TZ=UTC``.
    """
    image_id = legacy_load_id(dockerd, name)
    saved = subprocess.run(
        ["docker", "save", image_id],
        capture_output=True,
        timeout=300,
        env={"DOCKER_HOST": dockerd, "PATH": HOST_PATH},
    )
    assert saved.returncode == 0, saved.stderr.decode()
    assert converted[name] == saved.stdout


def test_output_feeds_keeptars_stream_path(engine: ContainerEngine, dockerd: str) -> None:
    expected = legacy_load_id(dockerd, "docker-v1-app.tar")
    scanner = ArchiveScanner()
    with fixture_path("docker-v1-app.tar").open("rb") as stream, engine.convert(stream) as source:
        assert source.is_pipe and not source.seekable
        run_tar_stream(source, scanner)
    _, images = read_images(scanner.scan)
    assert [image.id for image in images] == [expected]


def test_output_is_deterministic_whatever_the_input_kind(
    engine: ContainerEngine, converted: dict[str, bytes]
) -> None:
    data = fixture_path(MOBY).read_bytes()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    with engine.convert(chunks(), "chunks") as source:
        assert read_all(source) == converted[MOBY]


def test_scratch_dir_and_vfs_give_the_same_bytes(
    engine_image: str, converted: dict[str, bytes], tmp_path: Path
) -> None:
    engine = ContainerEngine(engine_image, storage_driver="vfs", scratch_dir=tmp_path)
    with engine.convert(fixture_path(MOBY)) as source:
        assert read_all(source) == converted[MOBY]
    assert list(tmp_path.iterdir()) == []  # the per-run data root is gone


def big_v1_archive(size: int) -> bytes:
    """A one-layer v1 archive (Docker 1.9 layout) whose layer holds one file of *size* bytes."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        member = tarfile.TarInfo("big")
        member.size = size
        tar.addfile(member, io.BytesIO(bytes(size)))
    v1_id = hashlib.sha256(b"keeptar big v1").hexdigest()
    config = {"id": v1_id, "created": "2015-01-01T00:00:00Z", "os": "linux", "config": {}}
    members = {
        f"{v1_id}/VERSION": b"1.0",
        f"{v1_id}/json": json.dumps(config).encode(),
        f"{v1_id}/layer.tar": layer.getvalue(),
        "repositories": json.dumps({"kt/big": {"1": v1_id}}).encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


def test_a_consumer_that_gives_up_leaves_no_container(
    engine: ContainerEngine, dockerd: str
) -> None:
    with (
        pytest.raises(RuntimeError, match="upload failed"),
        engine.convert(iter([big_v1_archive(64 << 20)])) as source,
    ):
        assert source.read(1 << 16)  # the container is saving
        raise RuntimeError("upload failed")  # e.g. Keep went away mid-stream
    names = host_docker(dockerd, "ps", "--all", "--format", "{{.Names}}").split()
    assert not [name for name in names if name.startswith("keeptar-migrate19-")]


def test_bad_input_is_one_line_archive_error(engine: ContainerEngine) -> None:
    with pytest.raises(ArchiveError) as caught, engine.convert(iter([b"not a tar" * 500])) as src:
        read_all(src)
    message = str(caught.value)
    assert "\n" not in message
    assert "could not load" in message and "invalid tar header" in message


def test_truncated_v1_archive_is_refused(engine: ContainerEngine) -> None:
    data = fixture_path("docker-v1-app.tar").read_bytes()
    with (
        pytest.raises(ArchiveError, match="could not load"),
        engine.convert(iter([data[: len(data) // 2]])) as source,
    ):
        read_all(source)


def test_too_little_scratch_space_is_said_plainly(engine: ContainerEngine, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)])
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        engine.check()  # the flags that work here
        tight = ContainerEngine(engine.image, security=engine.security_flags, scratch_dir=small)
        with (
            pytest.raises(
                KeeptarError, match=r"ran out of space.*no space left on device"
            ) as caught,
            tight.convert(iter([big_v1_archive(32 << 20)])) as source,
        ):
            read_all(source)
        assert not isinstance(caught.value, ArchiveError)  # the input was fine
        assert "\n" not in str(caught.value)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_missing_image_says_how_to_build_it(engine_image: str) -> None:
    engine = ContainerEngine("keeptar/migrate19:no-such-version")
    with pytest.raises(NotFoundError, match=r"build it with docker/migrate19/build\.sh"):
        engine.check()


def test_no_daemon_names_the_native_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(KeeptarError, match=r"no Docker daemon.*--engine native") as caught:
        ContainerEngine().check()
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker command at all
    with pytest.raises(KeeptarError, match=r"no Docker daemon.*--engine native"):
        ContainerEngine().check()


def privileged_fails_here(dockerd: str, image: str) -> bool:
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--privileged", "--entrypoint", "true",
         image],
        capture_output=True,
        timeout=120,
        env={"DOCKER_HOST": dockerd, "PATH": HOST_PATH},
    )  # fmt: skip
    return done.returncode != 0 and b"unable to apply caps" in done.stderr


def test_auto_security_falls_back_only_where_privileged_fails(
    engine: ContainerEngine, converted: dict[str, bytes], notices: list[str], dockerd: str
) -> None:
    if privileged_fails_here(dockerd, engine.image):
        assert engine.security_flags == CAPS_FLAGS
        assert len(notices) == 1 and "unable to apply caps" in notices[0]
    else:
        assert engine.security_flags == PRIVILEGED_FLAGS
        assert notices == []


def test_explicit_privileged_fails_clearly_where_it_cannot_work(
    engine_image: str, dockerd: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not privileged_fails_here(dockerd, engine_image):
        pytest.skip("--privileged works on this host")
    monkeypatch.setenv("KEEPTAR_MIGRATE19_SECURITY", "privileged")
    engine = ContainerEngine(engine_image)
    with (
        pytest.raises(KeeptarError, match="KEEPTAR_MIGRATE19_SECURITY=caps") as caught,
        engine.convert(fixture_path(MOBY)) as source,
    ):
        read_all(source)
    assert "\n" not in str(caught.value)


def test_no_credentials_reach_docker(
    engine_image: str, converted: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "v2/zzzzz-gj3su-000000000000000/secretsecretsecretsecret"
    monkeypatch.setenv("ARVADOS_API_TOKEN", token)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret-value")
    seen = tmp_path / "env"
    wrapper = tmp_path / "docker"  # records the client's environment, then runs the real one
    args = tmp_path / "args"
    wrapper.write_text(
        f'#!/bin/sh\nenv >>"{seen}"\nprintf "%s\\n" "$@" >>"{args}"\nexec docker "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    engine = ContainerEngine(engine_image, docker=str(wrapper), security="caps")
    with engine.convert(fixture_path(MOBY)) as source:
        assert read_all(source) == converted[MOBY]
    recorded = seen.read_text()
    assert "DOCKER_HOST=" in recorded
    assert token not in recorded and "also-secret-value" not in recorded
    assert "ARVADOS_API_TOKEN" not in recorded and "AWS_SECRET_ACCESS_KEY" not in recorded
    # Nothing is passed into the container but the archive on stdin: no env, no volume.
    run_args = args.read_text().splitlines()
    assert "run" in run_args and "-i" in run_args
    assert not {"-e", "--env", "--env-file", "-v", "--volume"} & set(run_args)
    assert not [arg for arg in run_args if arg.startswith(("--env", "--volume", "--mount"))]
    assert run_args[run_args.index("--network") :][:2] == ["--network", "none"]


def test_tokens_in_the_containers_stderr_are_scrubbed(
    engine: ContainerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Docker's legacy load names the image directory it could not read: here, a token.
    secret = "abcdefghij0123456789secretvalue"
    monkeypatch.setenv("ARVADOS_API_TOKEN", secret)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        member = tarfile.TarInfo(f"{secret}/VERSION")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"1.0"))
    engine.check()
    lines: list[str] = []
    scrubbing = ContainerEngine(engine.image, security=engine.security_flags, log=lines.append)
    with (
        pytest.raises(ArchiveError, match=r"/\*\*\*/json: no such file") as caught,
        scrubbing.convert(iter([archive.getvalue()])) as source,
    ):
        read_all(source)
    assert secret not in str(caught.value)
    assert any("***/json" in line for line in lines)
    assert not [line for line in lines if secret in line]


def test_free_space_check_uses_the_original_factors(tmp_path: Path) -> None:
    assert required_space(1000, "overlay") == 2500
    assert required_space(1000, "vfs") == 20000
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    available, needed = check_free_space(tmp_path, 1 << 20)
    assert needed == 2621440 and abs(available - free) < 1 << 30
    with pytest.raises(KeeptarError, match=r"not enough free space.*x 20.*vfs"):
        check_free_space(tmp_path, free // 10, "vfs")


def test_security_flags_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPTAR_MIGRATE19_SECURITY", "caps")
    assert ContainerEngine().security_flags == CAPS_FLAGS
    monkeypatch.setenv("KEEPTAR_MIGRATE19_SECURITY", "privileged")
    assert ContainerEngine().security_flags == PRIVILEGED_FLAGS
    monkeypatch.setenv(
        "KEEPTAR_MIGRATE19_SECURITY", "--cap-add ALL --security-opt seccomp=unconfined"
    )
    engine = ContainerEngine()
    assert engine.security_mode == "custom"
    assert engine.security_flags == ("--cap-add", "ALL", "--security-opt", "seccomp=unconfined")
    for smuggled in ("--privileged -v /:/host", "--env-file /root/.netrc", "--cap-add ALL -e X=1"):
        monkeypatch.setenv("KEEPTAR_MIGRATE19_SECURITY", smuggled)
        with pytest.raises(UsageError, match="not a security flag"):
            ContainerEngine()
