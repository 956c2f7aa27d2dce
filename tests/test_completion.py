"""Shell completion, as the script that ``keeptar --install-completion`` installs asks for it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: The console script, as bash runs it: typer names the completion variable after argv[0].
_AS_KEEPTAR = "import sys; sys.argv[0] = 'keeptar'; from keeptar.cli import main; main()"


def complete(words: str) -> list[str]:
    """What bash completion offers for the command line *words* (the last word is being typed)."""
    env = {
        **os.environ,
        "_KEEPTAR_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    result = subprocess.run(
        [sys.executable, "-c", _AS_KEEPTAR], capture_output=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().split()


def test_command_names_complete() -> None:
    assert complete("keeptar ins") == ["inspect"]
    assert {"tag", "push", "untag", "load", "images"} <= set(complete("keeptar "))


@pytest.mark.parametrize("command", ["inspect", "load", "images", "tag", "migrate19"])
def test_every_command_completes_its_options(command: str) -> None:
    assert "--json" in complete(f"keeptar {command} --j")
    assert "--help" in complete(f"keeptar {command} --")


def test_bash_completion_script_names_keeptar() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _AS_KEEPTAR, "--show-completion", "bash"],
        capture_output=True,
        env={**os.environ, "SHELL": "/bin/bash"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "_KEEPTAR_COMPLETE=complete_bash" in result.stdout.decode()
