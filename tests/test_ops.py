"""Operations: secrets kept from child processes and messages, read-only catalog access,
garbage collection of the embedded store, docker-mode PDHs, and arv-keepdocker habits."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture_path, run_keeptar
from keeptar._subprocess import child_environment, is_secret_name

APP = fixture_path("docker-v2-app.tar")


def keeptar_on(emulator: Any, *args: str, account: Any = None, **env: str) -> Any:
    """Run keeptar against *emulator* as *account* (Alice by default)."""
    return run_keeptar(
        *args, env={**emulator.env(account or emulator.alice), "KEEPTAR_RETRIES": "1", **env}
    )


# ---- §5 secrets and messages --------------------------------------------------------------


def test_secret_variable_names() -> None:
    for name in (
        "ARVADOS_API_TOKEN",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
        "SSH_AUTH_SOCK",
        "API_KEY",
        "REGISTRY_PASS",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        assert is_secret_name(name), name
    for name in ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "PATH", "HOME", "PWD"):
        assert not is_secret_name(name), name
    kept = child_environment({"PATH": "/bin", "ARVADOS_API_TOKEN": "t", "DOCKER_HOST": "unix://x"})
    assert kept == {"PATH": "/bin", "DOCKER_HOST": "unix://x"}


FAKE_DOCKER = """#!/bin/sh
# A stand-in docker: records its environment, then fails saying every secret it got.
env > "$DUMP_DIR/env.$1"
case "$1" in
  image) echo sha256:{image_id}; exit 0 ;;
esac
echo "Error response from daemon: token=$ARVADOS_API_TOKEN leaked=$LEAK_ME" >&2
echo "and the known token: {token}" >&2
exit 1
"""


def test_docker_gets_no_credentials_and_its_stderr_is_scrubbed(
    emulator: Any, tmp_path: Path
) -> None:
    token = emulator.alice.token
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(image_id="ab" * 32, token=token))
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    result = keeptar_on(
        emulator,
        "load",
        "--from",
        "docker",
        "kt/secret:1",
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        DUMP_DIR=str(tmp_path),
        DOCKER_HOST="unix:///nowhere/docker.sock",
        MY_SERVICE_SECRET="hunter2-the-secret",
        LEAK_ME="not-a-secret-name",
    )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("keeptar: error: docker save sha256:abab") and err.count("\n") == 1
    assert token not in err and "***" in err
    assert "not-a-secret-name" in err  # ordinary values are shown as they are
    for command in ("image", "save"):
        seen = dict(
            line.split("=", 1)
            for line in (tmp_path / f"env.{command}").read_text().splitlines()
            if "=" in line
        )
        assert "ARVADOS_API_TOKEN" not in seen and "MY_SERVICE_SECRET" not in seen
        assert token not in "\n".join(seen.values())
        assert seen["DOCKER_HOST"] == "unix:///nowhere/docker.sock"
        assert seen["PATH"].startswith(str(bin_dir)) and "HOME" in seen


@pytest.mark.parametrize("command", [["images"], ["info"], ["load", str(APP)]])
def test_a_refused_token_says_so(emulator: Any, command: list[str]) -> None:
    secret = "s3cretpart" * 4
    bad = f"v2/{emulator.uuid_prefix}-gj3su-000000000000001/{secret}"
    result = keeptar_on(emulator, *command, ARVADOS_API_TOKEN=bad)
    err = result.stderr.decode()
    assert result.returncode == 5, err
    assert err.count("\n") == 1 and err.startswith("keeptar: error: ")
    assert "the API server refused the token (401 Not logged in)" in err
    assert secret not in err and "cannot reach" not in err
