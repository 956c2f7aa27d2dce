"""A real consumer: ``arvados-cwl-runner`` finds the images keeptar loads.

``arvados_cwl.arvdocker.arv_docker_get_image`` is what ``arvados-cwl-runner`` calls for a
``DockerRequirement``: it looks the name up in Keep with
``arvados.commands.keepdocker.list_images_in_arv`` and, when that finds nothing, pulls
the image with Docker and uploads it with ``arv-keepdocker``.  Here both of those paths
fail the test: the image must be found as keeptar registered it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cwltool.errors import WorkflowException
from test_emulator_fidelity import keeptar_load

from conftest import fixture_path


class PullOrUploadAttempted(Exception):
    """arvados-cwl-runner did not find the image in Keep and tried to fetch it."""


@pytest.fixture
def no_pull_no_upload(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the pull (cwltool's ``DockerCommandLineJob.get_image``, the ``docker images``
    probe) and the upload (``arvados.commands.keepdocker.main``) with failures; the
    list names each attempt."""
    import arvados.commands.keepdocker
    import arvados_cwl.arvdocker
    import cwltool.docker

    attempts: list[str] = []

    def failing(what: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise PullOrUploadAttempted(f"pull or upload attempted: {what}")

        return fail

    monkeypatch.setattr(cwltool.docker.DockerCommandLineJob, "get_image", failing("pull"))
    monkeypatch.setattr(arvados.commands.keepdocker, "main", failing("upload"))
    monkeypatch.setattr(arvados_cwl.arvdocker, "determine_image_id", failing("docker images"))
    return attempts


def get_image(emulator: Any, name: str, tmp_path: Path, **context: Any) -> str:
    from arvados_cwl.arvdocker import arv_docker_get_image
    from arvados_cwl.context import ArvRuntimeContext

    runtime_context = ArvRuntimeContext({"tmp_outdir_prefix": str(tmp_path), **context})
    pdh: str = arv_docker_get_image(
        emulator.api(emulator.alice), {"dockerPull": name}, False, runtime_context
    )
    return pdh


def test_the_fail_stubs_catch_a_miss(
    emulator: Any, tmp_path: Path, no_pull_no_upload: list[str]
) -> None:
    """An image that is not in Keep makes arvados-cwl-runner pull: the stub stops it
    (cwltool's SourceLine re-raises it as a WorkflowException)."""
    with pytest.raises(WorkflowException, match="pull or upload attempted: pull"):
        get_image(emulator, f"kt/not-loaded-{os.urandom(4).hex()}:1", tmp_path)
    assert no_pull_no_upload == ["pull"]


def test_the_plain_name(emulator: Any, tmp_path: Path, no_pull_no_upload: list[str]) -> None:
    name = f"kt/cwl-plain-{os.urandom(4).hex()}:1"
    loaded = keeptar_load(
        emulator, "--force", "--tag", name, str(fixture_path("docker-v2-app.tar"))
    )
    assert get_image(emulator, name, tmp_path) == loaded["portable_data_hash"]
    assert no_pull_no_upload == []


def test_the_name_in_a_project(emulator: Any, tmp_path: Path, no_pull_no_upload: list[str]) -> None:
    """``--project-uuid``: with ``copy_deps`` (``--copy-deps``, and the default when
    creating or updating a workflow) arvados-cwl-runner searches only links that
    project owns."""
    project = emulator.alice_project["uuid"]
    name = f"kt/cwl-project-{os.urandom(4).hex()}:1"
    loaded = keeptar_load(
        emulator,
        "--force",
        "--project-uuid",
        project,
        "--tag",
        name,
        str(fixture_path("docker-v2-app.tar")),
    )
    pdh = get_image(emulator, name, tmp_path, project_uuid=project, copy_deps=True)
    assert pdh == loaded["portable_data_hash"]
    assert get_image(emulator, name, tmp_path, project_uuid=project) == pdh
    assert no_pull_no_upload == []


@pytest.mark.parametrize(
    "template",
    [
        "docker.io/library/kt-cwl-{}:22.04",
        pytest.param(
            "registry.example.com:5000/ns/app-{}:1",
            marks=pytest.mark.xfail(
                strict=True,
                raises=WorkflowException,
                reason="arvados-cwl-runner (3.2.1 and upstream main, arvdocker.py) splits "
                "dockerPull at every ':' and looks up repository 'registry.example.com', "
                "tag '5000/ns/app-…': no registration can match; it then tries to pull",
            ),
        ),
    ],
)
def test_a_fully_qualified_name(
    emulator: Any, tmp_path: Path, no_pull_no_upload: list[str], template: str
) -> None:
    """``dockerPull: docker.io/library/NAME:TAG`` (or a registry with a port) is searched
    verbatim, so keeptar must register ``--tag`` exactly as typed."""
    name = template.format(os.urandom(4).hex())
    loaded = keeptar_load(
        emulator, "--force", "--tag", name, str(fixture_path("docker-v2-app.tar"))
    )
    assert get_image(emulator, name, tmp_path) == loaded["portable_data_hash"]
    assert no_pull_no_upload == []
