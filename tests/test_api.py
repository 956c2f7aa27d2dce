"""The typed library entry points (issue 10): load_archive, load_collection, load_docker_image.

They load through the same code as ``keeptar load``; what is checked here is what
the library promises besides: streams are read as given, ``sys.stdin`` is never
touched, and errors name the functions' parameters, never the command line's flags.
Expected registrations come from the store's own records (search by the SDK-checked
catalog) and image IDs from the fixtures' truth (real tools).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_inspect_registration import archive_facts
from test_load import unique_image

from conftest import docker_image_id, docker_load, fixture_path, run_keeptar
from keeptar.catalog import search_images
from keeptar.errors import ConflictError, NotFoundError, UsageError

APP = fixture_path("docker-v2-app.tar")
TWO = fixture_path("docker-v2-two-images.tar")
FLAGS = re.compile(r"--[a-z]")


class _NoStdin:
    """Stands in for ``sys.stdin``: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the library used sys.stdin.{name}")


@pytest.fixture
def no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _NoStdin())


def _registered(backend: Any, name: str) -> set[tuple[str, str]]:
    return {(m.collection_uuid, m.image_id) for m in search_images(backend, name)}


def test_the_entry_points_are_exported_lazily() -> None:
    code = (
        "import sys, keeptar\n"
        "assert 'keeptar.api' not in sys.modules and 'keeptar.load' not in sys.modules\n"
        "from keeptar import load_archive, load_collection, load_docker_image, open_backend\n"
        "import keeptar.api, keeptar.backends\n"
        "assert load_archive is keeptar.api.load_archive\n"
        "assert load_collection is keeptar.api.load_collection\n"
        "assert load_docker_image is keeptar.api.load_docker_image\n"
        "assert open_backend is keeptar.backends.open_backend\n"
        "assert {'load_archive', 'load_collection', 'load_docker_image', 'open_backend'}"
        " <= set(keeptar.__all__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


_SHARED = {"project_uuid", "tag", "name", "force", "force_image_format", "warn"}


@pytest.mark.parametrize(
    ("entry_point", "own"),
    [
        ("load_archive", {"image", "progress", "resume"}),
        ("load_collection", {"image"}),
        ("load_docker_image", {"progress"}),
    ],
)
def test_signatures_list_each_keyword_as_load_image_takes_it(
    entry_point: str, own: set[str]
) -> None:
    """Each entry point takes load_image's shared keywords, with its types and defaults
    (they are spelled out, so help() lists them), and no other keyword."""
    import inspect
    import pydoc

    import keeptar.api
    from keeptar.load import load_image

    function = getattr(keeptar.api, entry_point)
    parameters = inspect.signature(function).parameters
    underlying = inspect.signature(load_image).parameters
    keywords = {k: p for k, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(keywords) == _SHARED | own
    for key, parameter in keywords.items():
        assert (parameter.annotation, parameter.default) == (
            underlying[key].annotation,
            underlying[key].default,
        ), key
    shown = pydoc.render_doc(function, renderer=pydoc.plaintext)
    for key, parameter in keywords.items():
        assert f"{key}: {parameter.annotation!r} = {parameter.default!r}" in shown
    for other in {"image", "progress", "resume", "source_kind", "input_stream", "tagg"} - own:
        with pytest.raises(TypeError, match=repr(other)):
            function(None, "ref", **{other: None})


def test_load_archive_from_a_path_and_from_binary_streams(
    backend: Any, tmp_path: Path, no_stdin: None
) -> None:
    from keeptar import load_archive

    archive = unique_image(APP, tmp_path)
    by_path = load_archive(backend, archive, tag="api/path:1")
    assert by_path.image_id == archive_facts(archive)[0]  # sha256 of the config, by tarfile
    assert (by_path.uuid, by_path.image_id) in _registered(backend, "api/path:1")

    # A stream that is not a file (no descriptor, not seekable): read once, as given.
    packed = io.BytesIO(gzip.compress(archive.read_bytes()))
    packed.seekable = lambda: False  # type: ignore[method-assign]
    from_stream = load_archive(backend, packed, tag="api/stream:1")
    assert from_stream.image_id == by_path.image_id
    assert (from_stream.uuid, from_stream.image_id) in _registered(backend, "api/stream:1")
    assert packed.tell() == len(packed.getvalue())

    # An open file object is read as a stream too.
    with archive.open("rb") as handle:
        from_file = load_archive(backend, handle, tag="api/file:1")
    assert (from_file.uuid, from_file.image_id) in _registered(backend, "api/file:1")


def test_a_path_named_dash_is_a_file_never_stdin(
    backend: Any, tmp_path: Path, no_stdin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keeptar import load_archive

    shutil.copyfile(unique_image(APP, tmp_path), tmp_path / "-")
    monkeypatch.chdir(tmp_path)
    result = load_archive(backend, "-", tag="api/dash:1")
    assert (result.uuid, result.image_id) in _registered(backend, "api/dash:1")
    with pytest.raises(UsageError, match="no such file"):
        load_archive(backend, tmp_path / "missing.tar")


def test_load_collection_reuses_the_stored_blocks(backend: Any, tmp_path: Path) -> None:
    from keeptar import load_archive, load_collection

    first = load_archive(backend, unique_image(APP, tmp_path), tag="api/coll:1")
    again = load_collection(backend, first.portable_data_hash, tag="api/coll:2")
    assert again.image_id == first.image_id and again.reused
    assert {u for u, _ in _registered(backend, "api/coll:2")} == {again.uuid}
    in_place = load_collection(backend, first.uuid, project_uuid="source", tag="api/coll:3")
    assert in_place.uuid == first.uuid
    with pytest.raises(UsageError, match="not a collection PDH or UUID") as caught:
        load_collection(backend, "kt/app:2.0")
    assert not FLAGS.search(str(caught.value))


def test_library_errors_name_parameters_and_the_cli_names_flags(
    backend: Any, tmp_path: Path
) -> None:
    from keeptar import load_archive

    with pytest.raises(UsageError) as caught:
        load_archive(backend, TWO)
    assert "choose one with the image argument" in str(caught.value)
    with pytest.raises(UsageError) as wrong:
        load_archive(backend, TWO, image="kt/none:0")
    assert str(wrong.value).startswith("the image argument 'kt/none:0' matches 0")
    long_tag = "kt/" + "a" * 230 + ":1"  # valid; too long for the default name
    with pytest.raises(UsageError) as bad_tag:
        load_archive(backend, APP, tag=long_tag)
    assert str(bad_tag.value).startswith("the tag argument 'kt/aaa")
    assert str(bad_tag.value).endswith("(the default name holds the tag; give the name argument)")
    with pytest.raises(UsageError) as bad_name:
        load_archive(backend, APP, name="x" * 300)
    assert str(bad_name.value).startswith("the name argument: ")
    for error in (caught.value, wrong.value, bad_tag.value, bad_name.value):
        assert not FLAGS.search(str(error)), str(error)

    # The command line says the same in terms of its flags.
    cli = run_keeptar("load", str(TWO))
    assert cli.returncode == 2
    assert cli.stderr.decode().startswith(
        "keeptar: error: the archive holds 2 images; choose one with --image: "
    )
    cli = run_keeptar("load", str(APP), "--tag", long_tag)
    message = cli.stderr.decode()
    assert cli.returncode == 2 and message.startswith("keeptar: error: --tag 'kt/aaa")
    assert message.endswith("(the default name holds the tag; give --name)\n")


def test_format_refusal_names_the_parameter(backend: Any, tmp_path: Path) -> None:
    from keeptar import load_archive

    if "v1" in backend.server_facts().docker_image_formats:
        pytest.skip("this store accepts v1 images")
    v1 = fixture_path("docker-v1-app.tar")
    with pytest.raises(ConflictError) as caught:
        load_archive(backend, v1)
    assert "pass the force_image_format argument" in str(caught.value)
    assert not FLAGS.search(str(caught.value))


def test_load_docker_image(local_home: Path, dockerd: str, no_stdin: None) -> None:
    from keeptar import load_docker_image, open_backend

    env = {**os.environ, "DOCKER_HOST": dockerd}
    expected = docker_image_id(env, docker_load(env, APP, "kt/app:2.0"))
    backend = open_backend("local")
    result = load_docker_image(backend, "kt/app:2.0")
    assert result.image_id == expected and result.repo_tag == "kt/app:2.0"
    assert (result.uuid, expected) in _registered(backend, "kt/app:2.0")
    with pytest.raises(NotFoundError) as missing:
        load_docker_image(backend, "kt/nope:0")
    assert not FLAGS.search(str(missing.value))


def test_readme_load_example_runs(
    local_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    example = next(block for block in blocks if "load_archive(" in block)
    assert len(example.strip().splitlines()) <= 4  # three lines and an import
    shutil.copyfile(unique_image(APP, tmp_path), tmp_path / "image.tar")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    from keeptar import open_backend

    matches = search_images(open_backend("local"), "myorg/tool:1.0")
    assert [m.collection_uuid for m in matches] == [printed[0]]
