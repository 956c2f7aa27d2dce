"""The one SOURCE resolver behind `load`, `inspect` and `tag` (issue 10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import fixture_path, run_keeptar
from keeptar.cli._source import SourceArg, classify_source

APP = fixture_path("docker-v2-app.tar")


def test_each_kind_of_argument(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cases = {
        "-": SourceArg.STDIN,
        str(APP): SourceArg.FILE,
        str(fifo): SourceArg.FILE,
        str(tmp_path): SourceArg.FILE,  # a directory: load and inspect refuse it as such
        "./missing": SourceArg.FILE,
        "/nowhere/at/all": SourceArg.FILE,
        "~/image": SourceArg.FILE,
        "missing.tar": SourceArg.FILE,
        "missing.TAR.GZ": SourceArg.FILE,
        "d8309758b8fe2c81034ffc8a10c36460+167": SourceArg.COLLECTION,
        "zzzzz-4zz18-0123456789abcde": SourceArg.COLLECTION,
        "ubuntu:22.04": SourceArg.IMAGE,
        "docker.io/library/ubuntu": SourceArg.IMAGE,
        "c25284d3": SourceArg.IMAGE,
        "sha256:c25284d3": SourceArg.IMAGE,
    }
    assert {argument: classify_source(argument) for argument in cases} == cases


def test_load_of_a_stored_image_name_says_which_command_does_what(local_home: Path) -> None:
    result = run_keeptar("load", "kt/app:2.0")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("keeptar: error: ")
    assert "keeptar tag" in err and "keeptar push" in err and "--from docker" in err
    assert not (local_home / "catalog.sqlite3").exists()  # refused before the store opens


def test_tag_of_a_file_says_to_load_it(local_home: Path) -> None:
    result = run_keeptar("tag", str(APP), "kt/other:1")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and "is a file" in err and "keeptar load" in err


@pytest.mark.parametrize(
    "args", [["inspect", "kt/app:2.0"], ["tag", "kt/app:2.0", "kt/again:1"]], ids=["inspect", "tag"]
)
def test_inspect_and_tag_resolve_a_name_the_same_way(local_home: Path, args: list[str]) -> None:
    loaded = run_keeptar("load", str(APP))
    assert loaded.returncode == 0, loaded.stderr
    result = run_keeptar(*args, "--json")
    assert result.returncode == 0, result.stderr
    assert loaded.stdout.decode().strip() in result.stdout.decode()
