"""Progress bars: on stderr when it is a terminal (a pseudo-terminal here), never on stdout."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import docker_load, fixture_path

APP = fixture_path("docker-v2-app.tar")

#: What rich writes when a live progress display starts on a terminal: hide the cursor.
BAR_STARTS = b"\x1b[?25l"


def on_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """Run ``keeptar ARGS`` with stderr on a pseudo-terminal: (status, stdout, terminal)."""
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "keeptar", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, **(env or {})},
            timeout=300,
        )
    finally:
        os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return result.returncode, result.stdout, shown


@pytest.mark.parametrize("command", ["load", "inspect"])
def test_a_terminal_gets_a_progress_bar_unless_told_not_to(command: str, local_home: Path) -> None:
    status, out, shown = on_terminal(command, str(APP))
    assert status == 0 and out.strip()
    assert BAR_STARTS in shown and f"{command} ".encode() in shown
    assert BAR_STARTS not in out
    status, _, shown = on_terminal(command, "--no-progress", str(APP))
    assert status == 0 and BAR_STARTS not in shown


def test_a_pipe_gets_no_progress_bar(local_home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keeptar", "load", str(APP)], capture_output=True, timeout=300
    )
    assert result.returncode == 0 and BAR_STARTS not in result.stderr


def test_push_from_the_docker_daemon_shows_a_progress_bar(local_home: Path, dockerd: str) -> None:
    env = {"DOCKER_HOST": dockerd}
    reference = docker_load({**os.environ, **env}, APP, "kt/app:2.0", rename="kt/pushbar")
    status, out, shown = on_terminal("push", reference, env=env)
    assert status == 0, shown.decode(errors="replace")[-2000:]
    assert out.strip()
    assert BAR_STARTS in shown and b"push " in shown
