"""The native v1 -> v2 engine and ``keeptar convert``.

Ground truth is Docker 20.10 itself: ``docker load`` of each v1 archive (its
legacy conversion) must give the ID the engine computes, and ``docker load`` of
the engine's v2 output must give the same ID again.  The moby unit-test
vectors (``migrate/v1/migratev1_test.go`` @v1.10.3) are checked without a daemon.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture_path, run_keeptar
from keeptar.errors import ArchiveError
from keeptar.migrate import convert_stream, history_entry, make_config, plan_conversion
from keeptar.migrate._golang import compact, go_string, go_time
from keeptar.streaming.sources import open_source

SHARED_V1 = "v1-moby-emptylayer.tar"
SHARED_V1_ID = "sha256:a9e31d6f186fbbe2468c9961316dba93971266d344ba960f68911df6e29b564c"
EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

# moby/moby migrate/v1/migratev1_test.go @v1.10.3, TestMigrateImages: the two
# "busybox from 1.9" JSONs (docker_version 1.8.2, so the fallback path), each
# layer the empty tar, and the image IDs the test asserts.
MOBY_JSON_1 = (
    b'{"architecture":"amd64","config":{"Hostname":"23304fc829f9","Domainname":"","User":"",'
    b'"AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,'
    b'"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,'
    b'"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},'
    b'"container":"23304fc829f9b9349416f6eb1afec162907eba3a328f51d53a17f8986f865d65",'
    b'"container_config":{"Hostname":"23304fc829f9","Domainname":"","User":"",'
    b'"AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,'
    b'"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["/bin/sh","-c",'
    b'"#(nop) ADD file:a3bc1e842b69636f9df5256c49c5374fb4eef1e281fe3f282c65fb853ee171c5 in /"],'
    b'"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,'
    b'"Labels":null},"created":"2015-10-31T22:22:54.690851953Z","docker_version":"1.8.2",'
    b'"layer_id":"sha256:55dc925c23d1ed82551fd018c27ac3ee731377b6bad3963a2a4e76e753d70e57",'
    b'"os":"linux"}'
)
MOBY_JSON_2 = (
    b'{"architecture":"amd64","config":{"Hostname":"23304fc829f9","Domainname":"","User":"",'
    b'"AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,'
    b'"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["sh"],'
    b'"Image":"d1592a710ac323612bd786fa8ac20727c58d8a67847e5a65177c594f43919498",'
    b'"Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},'
    b'"container":"349b014153779e30093d94f6df2a43c7a0a164e05aa207389917b540add39b51",'
    b'"container_config":{"Hostname":"23304fc829f9","Domainname":"","User":"",'
    b'"AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,'
    b'"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["/bin/sh","-c",'
    b'"#(nop) CMD [\\"sh\\"]"],'
    b'"Image":"d1592a710ac323612bd786fa8ac20727c58d8a67847e5a65177c594f43919498",'
    b'"Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},'
    b'"created":"2015-10-31T22:22:55.613815829Z","docker_version":"1.8.2",'
    b'"layer_id":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",'
    b'"os":"linux",'
    b'"parent_id":"sha256:039b63dd2cbaa10d6015ea574392530571ed8d7b174090f032211285a71881d0"}'
)
MOBY_ID_1 = "sha256:ca406eaf9c26898414ff5b7b3a023c33310759d6203be0663dbf1b3a712f432d"
MOBY_ID_2 = "sha256:a488bec94bb96b26a968f913d25ef7d8d204d727ca328b52b4b059c7d03260b6"


# ---- moby's vectors --------------------------------------------------------------------


def test_moby_migratev1_vectors() -> None:
    first = history_entry(MOBY_JSON_1)
    second = history_entry(MOBY_JSON_2)
    config_1 = make_config(MOBY_JSON_1, [EMPTY_TAR_DIFF_ID], [first])
    config_2 = make_config(MOBY_JSON_2, [EMPTY_TAR_DIFF_ID] * 2, [first, second])
    assert "sha256:" + hashlib.sha256(config_1).hexdigest() == MOBY_ID_1
    assert "sha256:" + hashlib.sha256(config_2).hexdigest() == MOBY_ID_2
    assert len(config_1) == 1145
    keys = list(json.loads(config_1))
    assert keys == [
        "architecture",
        "config",
        "container",
        "container_config",
        "created",
        "docker_version",
        "history",
        "os",
        "rootfs",
    ]


def test_empty_tar_diff_id_is_the_one_moby_hardcodes() -> None:
    assert "sha256:" + hashlib.sha256(bytes(1024)).hexdigest() == EMPTY_TAR_DIFF_ID


# ---- Go encoding (the values are what Go's encoding/json and time print) ---------------


def test_go_string_escapes_html_and_controls() -> None:
    assert (
        go_string('a<b>&"\\\n\r\t\x01\x7f')
        == b'"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\r\\t\\u0001\x7f"'
    )
    assert go_string("é\u2028\u2029中") == '"é\\u2028\\u2029中"'.encode()
    assert go_string("\udcff") == b'"\\ufffd"'
    assert go_string("\b\f") == b'"\\u0008\\u000c"'  # Go < 1.22, as Docker 20.10 is built


def test_compact_keeps_raw_bytes() -> None:
    raw = b'{ "a" : [1e3, 1.50, "x\\/y <&>" ],\n "b": "\xe2\x80\xa8 \xff" }'
    assert compact(raw) == b'{"a":[1e3,1.50,"x\\/y \\u003c\\u0026\\u003e"],"b":"\\u2028 \xff"}'


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("2015-03-04T14:38:56.769279623-07:00", "2015-03-04T14:38:56.769279623-07:00"),
        ("2015-01-02T03:04:05.120000000+02:00", "2015-01-02T03:04:05.12+02:00"),
        ("2015-01-02T03:04:05.000Z", "2015-01-02T03:04:05Z"),
        ("2015-01-02T03:04:05-00:00", "2015-01-02T03:04:05Z"),
        ("2015-01-02T03:04:05.1234567891234Z", "2015-01-02T03:04:05.123456789Z"),
    ],
)
def test_go_time(given: str, written: str) -> None:
    assert go_time(given, what="t") == written


# ---- hand-made v1 archives -------------------------------------------------------------


def _layer_tar(files: dict[str, bytes], mode: int = 0o644) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 1420070400
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _v1_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def _write_v1(
    path: Path, layers: list[tuple[str, bytes, bytes]], repositories: dict[str, Any] | None
) -> Path:
    """A v1 archive as Docker 1.9 wrote it: ``<id>/VERSION, json, layer.tar``, ``repositories``."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, data: bytes | None) -> None:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            else:
                info.size = len(data)
                info.mode = 0o644
            info.mtime = 1420070400
            tar.addfile(info, None if data is None else io.BytesIO(data))

        if repositories is not None:
            add("repositories", json.dumps(repositories).encode())
        for layer_id, v1_json, layer in layers:
            add(f"{layer_id}/", None)
            add(f"{layer_id}/VERSION", b"1.0")
            add(f"{layer_id}/json", v1_json)
            add(f"{layer_id}/layer.tar", layer)
    return path


def _static_hello(tmp: Path) -> bytes | None:
    """A static binary printing its argv and /etc/motd: the command of a runnable image."""
    if shutil.which("gcc") is None:
        return None
    src = tmp / "hello.c"
    src.write_text(
        "#include <stdio.h>\n"
        "int main(int argc, char **argv) {\n"
        '  char line[256]; FILE *f = fopen("/etc/motd", "r");\n'
        '  printf("hello from v1:");\n'
        '  for (int i = 1; i < argc; i++) printf(" %s", argv[i]);\n'
        '  printf("\\n");\n'
        '  if (f && fgets(line, sizeof line, f)) printf("%s", line);\n'
        "  return 0;\n"
        "}\n"
    )
    binary = tmp / "hello"
    made = subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(binary), str(src)], capture_output=True
    )
    return binary.read_bytes() if made.returncode == 0 else None


def _old_json(
    layer_id: str, parent: str | None, created: str, cmd: Any, version: str, **extra: Any
) -> bytes:
    """A v1 JSON in the shape Docker <= 1.8.2 wrote: other key order, extra keys."""
    doc: dict[str, Any] = {"id": layer_id}
    if parent:
        doc["parent"] = parent
    doc.update(
        {
            "created": created,
            "container": "c" * 64,
            "container_config": {
                "Hostname": "abc",
                "Memory": 0,
                "Cpuset": "",
                "PortSpecs": None,
                "ExposedPorts": {"80/tcp": {}},
                "Env": ["PATH=/bin"],
                "Cmd": cmd,
                "Volumes": {},
                "Labels": {"z": "1", "a": "<&>"},
            },
            "docker_version": version,
            "config": {"Cmd": ["/hello", "from", "config"], "Entrypoint": None, "Tty": False},
            "architecture": "amd64",
            "os": "linux",
            "checksum": "tarsum+sha256:" + "0" * 64,
            "Size": 1024,
        }
    )
    doc.update(extra)
    return json.dumps(doc, indent=1).encode()


def _new_json(layer_id: str, parent: str | None, created: str, cmd: Any, **extra: Any) -> bytes:
    """A v1 JSON as Docker 1.8.3-1.9 wrote it (docker_version 1.9.1)."""
    doc: dict[str, Any] = {"id": layer_id}
    if parent:
        doc["parent"] = parent
    doc.update(
        {
            "comment": "",
            "created": created,
            "container": "d" * 64,
            "container_config": {"Hostname": "d", "Cmd": cmd, "Env": None},
            "docker_version": "1.9.1",
            "author": "",
            "config": {"Cmd": ["/hello"], "Env": ["A=<b>&é"]},
            "architecture": "amd64",
            "os": "linux",
            "Size": 0,
        }
    )
    doc.update(extra)
    return json.dumps(doc, ensure_ascii=False).encode()


def _case_old(tmp: Path, hello: bytes | None) -> Path:
    """Docker 1.6-style JSON (fallback path), gzip, bzip2, xz, empty and 0-byte layers."""
    ids = [_v1_id(f"old{i}") for i in range(5)]
    base = _layer_tar({"hello": hello or b"#!/bin/false\n", "etc/motd": b"old base\n"}, 0o755)
    layers = [
        gzip.compress(base),
        bz2.compress(_layer_tar({"etc/motd": b"bzip2 layer says hi\n"})),
        b"",
        bytes(1024),
        lzma.compress(_layer_tar({"opt/x": b"xz"})),
    ]
    created = [
        "2015-01-02T03:04:05.120000000+02:00",
        "2015-01-02T03:04:06Z",
        "2015-01-02T03:04:07.5-07:30",
        "2015-01-02T03:04:08.000000001Z",
        "2015-01-02T03:04:09.999Z",
    ]
    versions = ["1.6.2", "1.7.1", "", "1.8.3-dev", "1.8.2"]
    cmds: list[Any] = [
        ["/bin/sh", "-c", "#(nop) ADD file:x in /"],
        "/bin/sh -c echo string cmd",
        None,
        [],
        ["/bin/sh", "-c", '#(nop) CMD ["/hello"]'],
    ]
    entries = []
    for i, layer_id in enumerate(ids):
        extra: dict[str, Any] = {}
        if i == 1:
            extra = {"author": "Renée <r@example.org>", "comment": "tab\there & there"}
        entries.append(
            (
                layer_id,
                _old_json(
                    layer_id, ids[i - 1] if i else None, created[i], cmds[i], versions[i], **extra
                ),
                layers[i],
            )
        )
    return _write_v1(tmp / "old.tar", entries, {"kt/old": {"v1": ids[-1], "latest": ids[-1]}})


def _case_new(tmp: Path, hello: bytes | None) -> Path:
    """Docker 1.9-style JSON (raw path) with HTML, non-ASCII, unknown keys, odd spacing."""
    ids = [_v1_id(f"new{i}") for i in range(3)]
    base = _layer_tar({"hello": hello or b"#!/bin/false\n", "etc/motd": b"new base\n"}, 0o755)
    raw_json = (
        b'{ "id" : "' + ids[2].encode() + b'", "parent":"' + ids[1].encode() + b'",\n'
        b' "created": "2015-11-20T10:00:00.100-05:00", "docker_version": "1.9.1",\n'
        b' "author": "J\\u00f6rg <j@x>", "comment": "\xe2\x80\xa8 slash \\/ ok",\n'
        b' "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) LABEL a=<b>&c"]},\n'
        b' "config": {"Cmd": ["/hello", "arg<1>"], "Labels": {"b": "&", "a": "\xc3\xa9"}},\n'
        b' "x_unknown": [1e3, 1.50, -0, true, null, {"k": "v"}],\n'
        b' "os": "linux", "architecture": "amd64", "Size": 12, "layer_id": "x", "throwaway": true}'
    )
    entries = [
        (
            ids[0],
            _new_json(ids[0], None, "2015-11-20T09:00:00Z", ["/bin/sh", "-c", "#(nop) ADD"]),
            gzip.compress(base),
        ),
        (
            ids[1],
            _new_json(
                ids[1],
                ids[0],
                "2015-11-20T09:30:00.000000000Z",
                None,
                author="Zoë",
                comment="<b>bold</b>",
            ),
            b"",
        ),
        (ids[2], raw_json, _layer_tar({"etc/motd": "motd: ünïcode\n".encode()})),
    ]
    return _write_v1(tmp / "new.tar", entries, {"kt/new": {"1.9": ids[2]}})


def _case_multi(tmp: Path, hello: bytes | None) -> Path:
    """One base, two tagged images on it, an untagged leaf: Docker shows all three tops."""
    ids = [_v1_id(f"multi{i}") for i in range(4)]
    parents = [None, ids[0], ids[0], ids[1]]
    entries = [
        (
            layer_id,
            _new_json(layer_id, parents[i], f"2015-11-2{i}T00:00:00Z", ["step", str(i)]),
            _layer_tar({f"f{i}": b"x" * i}),
        )
        for i, layer_id in enumerate(ids)
    ]
    del hello
    return _write_v1(tmp / "multi.tar", entries, {"kt/a": {"1": ids[1]}, "kt/b": {"2": ids[2]}})


CASES: dict[str, Callable[[Path, bytes | None], Path]] = {
    "shared": lambda tmp, hello: fixture_path(SHARED_V1),
    "app": lambda tmp, hello: fixture_path("docker-v1-app.tar"),
    "multi": _case_multi,
    "old": _case_old,
    "new": _case_new,
}


def _convert_file(path: Path) -> tuple[list[str], bytes]:
    out = io.BytesIO()
    with open_source(path) as source:
        result = convert_stream(source, out)
    assert result.conversion is not None
    return [image.id for image in result.conversion.images], out.getvalue()


def test_shared_docker_19_save_gives_docker_2010s_id() -> None:
    ids, _ = _convert_file(fixture_path(SHARED_V1))
    assert ids == [SHARED_V1_ID]


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_is_the_v1_members_then_a_small_tail(case: str, tmp_path: Path) -> None:
    path = CASES[case](tmp_path, None)
    data = path.read_bytes()
    with open_source(path) as source:
        plan = plan_conversion(source)
    _, out = _convert_file(path)
    assert out[: plan.cut] == data[: plan.cut]
    assert out[plan.cut :] == plan.tail
    assert plan.tail.endswith(bytes(1024)) and len(plan.tail) < 64 << 10
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        names = [m.name for m in tar.getmembers()]
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert len(names) == len(set(names)), "no duplicate member names"
    assert names.count("repositories") == 1
    with tarfile.open(path) as tar:
        assert names[: len(tar.getnames())] == tar.getnames()
    assert [item["Config"] for item in manifest] == [
        i.removeprefix("sha256:") + ".json" for i in _convert_file(path)[0]
    ]


# ---- against Docker 20.10 --------------------------------------------------------------


def _docker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], input=input, capture_output=True, timeout=300)


def _image_ids(all_: bool = False) -> set[str]:
    listed = _docker("images", *(["-a"] if all_ else []), "-q", "--no-trunc")
    assert listed.returncode == 0, listed.stderr
    return set(listed.stdout.decode().split())


def _remove(ids: set[str]) -> None:
    if ids:
        _docker("rmi", "-f", *sorted(ids))


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> bytes | None:
    return _static_hello(tmp_path_factory.mktemp("hello"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_docker_agrees(case: str, dockerd: str, hello: bytes | None, tmp_path: Path) -> None:
    """docker load (v1, legacy) and docker load (our v2) give the engine's IDs; it runs."""
    path = CASES[case](tmp_path, hello)
    ids, v2 = _convert_file(path)
    # An image another test left in the shared daemon would not show up as new: remove
    # whatever already has these IDs, so that each load below has to make them itself.
    _remove(set(ids) & _image_ids(all_=True))
    before = _image_ids(all_=True)
    try:
        loaded = _docker("load", "-i", str(path))
        assert loaded.returncode == 0, loaded.stderr
        tops = _image_ids() - before
        assert tops == set(ids)
    finally:
        _remove(_image_ids(all_=True) - before)
    try:
        loaded = _docker("load", input=v2)
        assert loaded.returncode == 0, loaded.stderr
        assert _image_ids() - before == set(ids)
        if case in ("old", "new") and hello is not None:
            ran = _docker("run", "--rm", "--network=none", ids[0])
            assert ran.returncode == 0, ran.stderr
            expected = {
                "old": b"hello from v1: from config\nbzip2 layer says hi\n",
                "new": "hello from v1: arg<1>\nmotd: ünïcode\n".encode(),
            }[case]
            assert ran.stdout == expected
    finally:
        _remove(_image_ids(all_=True) - before)


def test_a_runnable_image_was_made(hello: bytes | None) -> None:
    if hello is None:
        pytest.skip("no gcc with a static libc: the run checks above were skipped")
    assert hello[:4] == b"\x7fELF"


# ---- keeptar convert ---------------------------------------------------------------------


def test_convert_file_to_file_json(tmp_path: Path) -> None:
    out = tmp_path / "v2.tar"
    done = run_keeptar("convert", str(fixture_path(SHARED_V1)), "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [i["id"] for i in doc["images"]] == [SHARED_V1_ID]
    assert doc["images"][0]["v1_id"].startswith("25445a0fc502")
    assert doc["images"][0]["repo_tags"] == ["matthughes/library-centos:6-2015.03.20"]
    assert doc["bytes"] == out.stat().st_size
    assert out.read_bytes() == _convert_file(fixture_path(SHARED_V1))[1]


def test_convert_warns_about_layers_containerd_cannot_read(tmp_path: Path) -> None:
    done = run_keeptar("convert", str(_case_old(tmp_path, None)), "-o", str(tmp_path / "o.tar"))
    assert done.returncode == 0, done.stderr
    assert b"keeptar: warning: image" in done.stderr
    assert b"keeps 2 bzip2/xz-compressed" in done.stderr
    done = run_keeptar("convert", str(_case_new(tmp_path, None)), "-o", str(tmp_path / "o.tar"))
    assert b"warning" not in done.stderr


def test_convert_stdin_to_stdout_with_a_tag() -> None:
    data = fixture_path(SHARED_V1).read_bytes()
    done = run_keeptar("convert", "-", "--tag", "kt/renamed:1", input=gzip.compress(data))
    assert done.returncode == 0, done.stderr
    assert SHARED_V1_ID.encode() in done.stderr
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["kt/renamed:1"]


def test_convert_passes_v2_through_unchanged() -> None:
    data = fixture_path("docker-v2-app.tar").read_bytes()
    done = run_keeptar("convert", "-", input=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    assert b"note:" in done.stderr and b"docker-v2" in done.stderr


def _stored_v1(store: Any) -> tuple[Any, dict[str, Any], bytes]:
    from keeptar.keep.manifest import single_file_manifest

    data = fixture_path(SHARED_V1).read_bytes()
    # two blocks, so the kept part spans a block boundary
    locators = [
        store.put_block(memoryview(data[:10000])),
        store.put_block(memoryview(data[10000:])),
    ]
    record = store.create_collection(
        manifest_text=single_file_manifest("image.tar", locators, len(data)),
        name="v1 image",
        owner_uuid=store.current_user().uuid,
        properties={},
    )
    return store, record, data


def test_convert_a_collection(backend: Any, tmp_path: Path) -> None:
    _, record, _ = _stored_v1(backend)
    out = tmp_path / "v2.tar"
    for ref in (record["portable_data_hash"], record["uuid"]):
        done = run_keeptar("convert", ref, "-o", str(out), "--json")
        assert done.returncode == 0, done.stderr
        assert [i["id"] for i in json.loads(done.stdout)["images"]] == [SHARED_V1_ID]
        assert out.read_bytes() == _convert_file(fixture_path(SHARED_V1))[1]


def test_convert_then_keeptar_load(local_home: Path) -> None:
    converted = run_keeptar("convert", str(fixture_path(SHARED_V1)))
    assert converted.returncode == 0, converted.stderr
    loaded = run_keeptar("load", "-", input=converted.stdout)
    assert loaded.returncode == 0, loaded.stderr
    listed = run_keeptar("images", "--json")
    assert SHARED_V1_ID in listed.stdout.decode()


def test_zero_copy_in_keep(local_home: Path) -> None:
    """The v2 file is segments of the v1 blocks plus one new block holding only the tail."""
    from keeptar.backends.embedded import EmbeddedBackend
    from keeptar.catalog.loadable import rewrite_manifest
    from keeptar.keep.blocks import KeepFileReader
    from keeptar.keep.manifest import parse_manifest
    from keeptar.streaming.sources import ByteSource

    store, record, _ = _stored_v1(EmbeddedBackend(local_home))
    (item,) = parse_manifest(record["manifest_text"])
    reader = KeepFileReader(store.get_block, item)
    plan = plan_conversion(ByteSource(reader, "image.tar"))  # type: ignore[arg-type]
    text = rewrite_manifest(store, item.segments, plan.rewrite, f"{plan.images[0].id}.tar")
    (new,) = parse_manifest(text)
    old_blocks = {s.locator for s in item.segments}
    added = [s for s in new.segments if s.locator not in old_blocks]
    assert len(added) == 1 and added[0].length == len(plan.tail)
    stored = KeepFileReader(store.get_block, new).read()
    assert stored == _convert_file(fixture_path(SHARED_V1))[1]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["/nonexistent/x.tar"], 2, "cannot open"),
        (["-", "--json"], 2, "-o FILE"),
        (["/etc/hostname", "-o", "{out}"], 3, "not a tar archive"),
        (["{v1}", "--tag", "a:1", "-o", "{dir}"], 2, "directory"),
        (["{multi}", "--tag", "a:1", "-o", "{out}"], 2, "one image only"),
        (["{v1}", "--tag", "Bad Name:1", "-o", "{out}"], 2, "not a valid image name"),
        (["99999999999999999999999999999999+1"], 6, "99999999999999999999999999999999"),
    ],
)
def test_convert_errors(
    args: list[str], code: int, words: str, tmp_path: Path, local_home: Path
) -> None:
    filled = [
        a.format(
            out=tmp_path / "o.tar",
            dir=tmp_path,
            v1=fixture_path(SHARED_V1),
            multi=_case_multi(tmp_path, None),
        )
        for a in args
    ]
    done = run_keeptar("convert", *filled)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith(b"keeptar: error: ")
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr
    assert words.encode() in done.stderr
    assert not (tmp_path / "o.tar").exists()
    assert not list(tmp_path.glob(".*.part"))


# ---- edge cases: Docker's answer (an ID, or a refusal) is the expected one ---------------

_PARENT = b'"parent":"@PARENT@",'


def _json(extra: bytes = b"", *, parent: bool = False, version: bytes = b"1.9.1") -> bytes:
    return (
        b'{"id":"@ID@",'
        + (_PARENT if parent else b"")
        + b'"created":"2015-11-20T09:00:00Z","docker_version":"'
        + version
        + b'","container_config":{"Cmd":["a"]},"os":"linux"'
        + extra
        + b"}"
    )


_LAYER = _layer_tar({"a": b"1" * 1000})
EDGE_CASES: dict[str, tuple[list[bytes], list[bytes] | None]] = {
    "case-insensitive keys": (
        [
            _json(
                b',"Author":"Big","CREATED":"2016-01-01T00:00:00+01:00",'
                b'"Container_Config":{"cmd":["x","y"]}'
            )
        ],
        None,
    ),
    "duplicate keys": ([_json(b',"author":"one","author":"two","os":"linux"')], None),
    "escaped key": ([_json(b',"\\u0061uthor":"esc"')], None),
    "invalid utf-8": ([_json(b',"author":"a\xff\xfeb","comment":"\xc3"')], None),
    "invalid utf-8, old": (
        [_json(b',"author":"a\xff\xfeb","comment":"\xc3"', version=b"1.7.0")],
        None,
    ),
    "20.10 fields, old": (
        [
            _json(
                b',"config":{"Healthcheck":{"Test":["CMD","x"],"Interval":5},"StopTimeout":3,'
                b'"Shell":["sh"],"ArgsEscaped":true,"Volumes":{"/a":{}},"ExposedPorts":{}},'
                b'"variant":"v8"',
                version=b"1.5",
            )
        ],
        None,
    ),
    "Size not an integer": ([_json(b',"Size":1.5')], None),
    "created null": ([_json(b',"created":null')], None),
    "no created, docker 0.4": (
        [b'{"id":"@ID@","docker_version":"0.4.0","container_config":{"Cmd":null},"os":"linux"}'],
        None,
    ),
    "string Cmd": ([_json(b',"container_config":{"Cmd":"echo hi"}')], None),
    "lower-case z": ([_json(b',"created":"2015-11-20T09:00:00z"')], None),
    "one-digit hour": ([_json(b',"created":"2015-11-20T9:00:00Z"')], None),
    "comma fraction": ([_json(b',"created":"2015-11-20T09:00:00,5Z"')], None),
    "whitespace": (
        [
            b' \n {"id":"@ID@" , "created" : "2015-11-20T09:00:00Z" ,\t"docker_version":"1.9.1" ,'
            b' "x": [ 1 , 2 ] }\n'
        ],
        None,
    ),
    "number spellings": ([_json(b',"x":[1E+3,-0.0,1e-7,123456789012345678901234567890]')], None),
    "null in Cmd": ([_json(b',"container_config":{"Cmd":["a",null,"b"]}')], None),
    "odd versions": ([_json(version=b"1.8.3.1"), _json(parent=True, version=b"01.08.003")], None),
    "negative version part": ([_json(version=b"1.-9.9")], None),
    "Parent capitalised": ([_json(), _json(b',"Parent":"@PARENT@"')], None),
    "windows": ([_json(b',"os":"windows"')], None),
    "not an object": ([b"[]"], None),
    "gzip members": ([_json()], [gzip.compress(_LAYER[:3000]) + gzip.compress(_LAYER[3000:])]),
    "bzip2 streams": ([_json()], [bz2.compress(_LAYER[:3000]) + bz2.compress(_LAYER[3000:])]),
    "xz streams": ([_json()], [lzma.compress(_LAYER[:3000]) + lzma.compress(_LAYER[3000:])]),
    "gzip then zeros": ([_json()], [gzip.compress(_LAYER) + bytes(512)]),
    "tar then garbage": ([_json()], [_LAYER + b"garbage"]),
    "long fraction": ([_json(b',"created":"2015-11-20T09:00:00.1234567891234+01:00"')], None),
    "odd offset": ([_json(b',"created":"2015-11-20T09:00:00+05:75"')], None),
    "year 0": ([_json(b',"created":"0000-02-29T00:00:00Z"')], None),
    "feb 30": ([_json(b',"created":"2015-02-30T00:00:00Z"')], None),
    "escaped created": ([_json(b',"created":"2015-11-20T09:00:00\\u005a"')], None),
    "bzip2 then zeros": ([_json()], [bz2.compress(_LAYER) + bytes(512)]),
    "xz then zeros": ([_json()], [lzma.compress(_LAYER) + bytes(512)]),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_docker_agrees_on_edge_cases(name: str, dockerd: str, tmp_path: Path) -> None:
    jsons, layer_data = EDGE_CASES[name]
    ids = [_v1_id(name + str(i)) for i in range(len(jsons))]
    entries = []
    for i, text in enumerate(jsons):
        text = text.replace(b"@ID@", ids[i].encode())
        text = text.replace(b"@PARENT@", ids[i - 1].encode() if i else b"")
        layer = layer_data[i] if layer_data else _layer_tar({f"f{i}": b"x"})
        entries.append((ids[i], text, layer))
    path = _write_v1(tmp_path / "edge.tar", entries, {"kt/edge": {"t": ids[-1]}})
    try:
        mine: list[str] | None = _convert_file(path)[0]
    except ArchiveError:
        mine = None
    before = _image_ids(all_=True)
    try:
        loaded = _docker("load", "-i", str(path))
        if mine is None:
            assert loaded.returncode != 0, "Docker loads what the engine refused"
        else:
            assert loaded.returncode == 0, loaded.stderr
            assert _image_ids() - before == set(mine)
    finally:
        _remove(_image_ids(all_=True) - before)


# ---- containers/image (podman, skopeo, singularity's docker-archive) reads the output -----


@pytest.mark.parametrize("case", sorted(CASES))
def test_skopeo_copies_the_output(case: str, tmp_path: Path) -> None:
    """skopeo checks each layer's uncompressed sha256 against the config's diff IDs."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    path = CASES[case](tmp_path, None)
    ids, v2 = _convert_file(path)
    archive = tmp_path / "v2.tar"
    archive.write_bytes(v2)
    copied = subprocess.run(
        ["skopeo", "copy", "-q", f"docker-archive:{archive}:@0", f"dir:{tmp_path / 'dir'}"],
        capture_output=True,
        timeout=300,
    )
    assert copied.returncode == 0, copied.stderr
    manifest = json.loads((tmp_path / "dir" / "manifest.json").read_bytes())
    assert manifest["config"]["digest"] == ids[0]


def test_convert_refuses_a_terminal() -> None:
    import os
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "keeptar", "convert", str(fixture_path(SHARED_V1))],
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert done.stderr.startswith(b"keeptar: error: refusing to write a tar archive to a terminal")
