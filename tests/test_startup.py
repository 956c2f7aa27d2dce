"""Start-up stays short: commands import only what they use (checked by module, not by time).

Speed itself is measured in benchmarks/bench_startup.py; these tests guard the
laziness that makes it, with the modules loaded by the real entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import fixture_path, run_keeptar

APP = fixture_path("docker-v2-app.tar")

#: Never needed to print the version or to inspect a file.
HEAVY = {"arvados", "googleapiclient", "pydantic", "rich", "zstandard", "sqlite3", "ciso8601"}


#: ``python -m keeptar``, which also writes every module loaded on stderr as it exits.
#: (sys.modules, not ``-X importtime``: that misses importlib.import_module's imports.)
_RUN_AND_LIST = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + ' '.join(sys.modules) + '\\n'))\n"
    "runpy.run_module('keeptar', run_name='__main__', alter_sys=True)\n"
)


def imported_modules(
    *args: str, env: dict[str, str] | None = None, stdin: Path | None = None
) -> set[str]:
    """Every module `python -m keeptar ARGS` has loaded when it exits (it must succeed)."""
    with open(stdin or os.devnull, "rb") as source:
        result = subprocess.run(
            [sys.executable, "-c", _RUN_AND_LIST, *args],
            capture_output=True,
            env={**os.environ, **(env or {})},
            stdin=source,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    listed = result.stderr.decode().rsplit("\nMODULES ", 1)[1]
    names = set(listed.split())
    assert "keeptar" in names  # the parse worked
    return names


def roots(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_version_imports_neither_typer_nor_any_heavy_dependency() -> None:
    names = imported_modules("--version")
    assert not roots(names) & (HEAVY | {"typer", "click"})
    assert not {n for n in names if n.startswith("keeptar.") and n != "keeptar.errors"} - {
        "keeptar.cli",
        "keeptar.__main__",
    }


def test_the_version_fast_path_prints_what_typer_prints() -> None:
    fast = subprocess.run([sys.executable, "-m", "keeptar", "--version"], capture_output=True)
    # Not the exact argv of the fast path: typer's eager --version option answers.
    typer_path = subprocess.run(
        [sys.executable, "-m", "keeptar", "--version", "inspect"], capture_output=True
    )
    assert fast.returncode == typer_path.returncode == 0
    assert fast.stdout == typer_path.stdout
    assert fast.stdout.decode().startswith("keeptar ")


@pytest.mark.parametrize("extra", [[], ["--json"], ["--verify"]], ids=["text", "json", "verify"])
def test_inspecting_a_file_imports_no_backend_and_no_pydantic(extra: list[str]) -> None:
    names = imported_modules("inspect", *extra, str(APP))
    assert not roots(names) & HEAVY
    assert not names & {
        "keeptar.load",
        "keeptar.backends",
        "keeptar.catalog.images",
        "keeptar.keep.manifest",  # collections only
        "keeptar.keep.blocks",
    }
    # Only the command that runs is registered (typer builds the options of each).
    assert not names & {"keeptar.cli.load", "keeptar.cli.images", "keeptar.cli.info"}


@pytest.mark.parametrize(
    "args",
    [[], ["--json"], ["--verify", "--no-progress"], ["--json", "-"]],
    ids=["text", "json", "verify", "stdin"],
)
def test_inspecting_a_file_with_a_plain_command_line_imports_no_typer(args: list[str]) -> None:
    """The fast path: typer (and click, which it loads) is most of inspect's start-up."""
    if args[-1:] == ["-"]:
        names = imported_modules("inspect", *args, stdin=APP)
    else:
        names = imported_modules("inspect", *args, str(APP))
    assert not roots(names) & {"typer", "click"}
    assert "keeptar.cli.inspect" not in names  # the typer command's module


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--backend", "local"], ["--json", "--json"], ["a", "b"], ["--", "x"], ["-x"]],
)
def test_other_inspect_command_lines_go_to_typer(args: list[str]) -> None:
    from keeptar.cli._inspect_run import plain_arguments

    assert plain_arguments(args) is None


def test_the_plain_options_are_the_typer_commands_own() -> None:
    """Each option the fast path reads exists in typer's command, for the same argument."""
    from keeptar.cli._inspect_run import PLAIN_FLAGS

    params = {
        label.split()[1]: param
        for label, param, _ in command_params()
        if label.startswith("inspect ")
    }
    for flag, (name, value) in PLAIN_FLAGS.items():
        param = params[name]
        on = flag in param.opts
        assert on or flag in param.secondary_opts, flag
        assert value is on
    assert params["target"].default == "-"
    assert params["backend"].envvar == "KEEPTAR_BACKEND"


def test_inspecting_a_docker_v2_archive_imports_only_the_layouts_asked() -> None:
    """Layouts are imported in detection order, and the OCI walker only to verify."""
    names = imported_modules("inspect", str(APP))
    assert {"keeptar.formats.docker_oci", "keeptar.formats.docker_v2"} <= names
    assert not names & {
        "keeptar.formats.oci_archive",
        "keeptar.formats.docker_v1",
        "keeptar.formats._oci",
    }


def test_reading_a_plain_archive_imports_no_bz2_or_lzma() -> None:
    # -S: no site, whose .pth files may import them (shutil does) before keeptar runs.
    code = (
        "import sys, keeptar.archive\n"
        "keeptar.archive.inspect_archive(sys.argv[1])\n"
        "print(' '.join(sorted({'bz2', 'lzma'} & set(sys.modules))))\n"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-S", "-c", code, str(APP)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == []


def test_help_lists_every_command() -> None:
    from keeptar.cli import COMMANDS

    listed = run_keeptar("--help").stdout.decode().split("Commands:")[1].split()
    assert set(COMMANDS) <= set(listed)


def test_listing_local_images_imports_no_arvados_sdk(local_home: Path) -> None:
    names = imported_modules("images", "--json")
    assert not roots(names) & {"arvados", "googleapiclient", "pydantic", "rich", "zstandard"}


def test_import_keeptar_defers_the_api_until_it_is_used() -> None:
    code = (
        "import sys, keeptar\n"
        "assert 'keeptar.archive' not in sys.modules and 'keeptar.formats' not in sys.modules\n"
        "from keeptar import inspect_archive, ArchiveFormat\n"
        "import keeptar.archive, keeptar.formats\n"
        "assert inspect_archive is keeptar.archive.inspect_archive\n"
        "assert ArchiveFormat is keeptar.formats.ArchiveFormat\n"
        "assert set(keeptar.__all__) <= set(dir(keeptar))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def command_params() -> list[tuple[str, Any, Any]]:
    """(label, parameter, a context) for every parameter of every command, converters set."""
    import typer.main

    from keeptar.cli import app
    from keeptar.cli._coerce import light_coercion

    group = typer.main.get_command(app)
    ctx = group.make_context("keeptar", ["images"], resilient_parsing=True)
    found = []
    for name, command in [("", group), *group.commands.items()]:  # type: ignore[attr-defined]
        light_coercion(command, ctx)
        found += [(f"{name} {param.name}", param, ctx) for param in command.get_params(ctx)]
    return found


def test_plain_options_convert_exactly_as_typer_does() -> None:
    """The pydantic-free converter returns what typer's own returns, errors included."""
    import enum

    from typer._coercion import build_runtime_param

    from keeptar.cli._coerce import _PassThrough

    checked = 0
    for label, param, ctx in command_params():
        light = param._runtime_param
        if not isinstance(light, _PassThrough):
            continue
        kind = param.type_descriptor.annotation
        samples: list[Any] = [None]
        if kind is str:
            samples += ["x", "", "-", "ünïcode", "a b", b"bytes"]
        elif kind is bool:
            samples += [True, False, "true", "0", "bogus"]
        elif issubclass(kind, enum.Enum):
            samples += [*kind, *(str(k.value) for k in kind), "bogus", "FILE", ""]
        for value in samples:
            outcomes = []
            for converter in (light, build_runtime_param(param.type_descriptor)):
                try:
                    outcomes.append(("ok", converter.coerce(value, param=param, ctx=ctx)))
                except Exception as exc:
                    outcomes.append((type(exc).__name__, str(exc)))
            assert outcomes[0] == outcomes[1], (label, value, outcomes)
            checked += 1
    assert checked > 50  # every command's options were seen


#: ``keeptar inspect`` through typer, as any command line the fast path declines runs.
_THROUGH_TYPER = (
    "import sys\n"
    "from keeptar.cli import _registered_app\n"
    "from keeptar.cli._app import main\n"
    "_registered_app(sys.argv[1:])\n"
    "main()\n"
)


def _both_ways(
    args: list[str], stdin: Path | None = None, env: dict[str, str] | None = None
) -> list[tuple[int, bytes, bytes]]:
    """(exit status, stdout, stderr) of ``keeptar inspect ARGS``: fast path, then typer."""
    outcomes = []
    for command in (["-m", "keeptar"], ["-c", _THROUGH_TYPER]):
        with open(stdin or os.devnull, "rb") as source:
            result = subprocess.run(
                [sys.executable, *command, "inspect", *args],
                stdin=source,
                capture_output=True,
                env={**os.environ, **(env or {})},
                timeout=120,
            )
        outcomes.append((result.returncode, result.stdout, result.stderr))
    return outcomes


def test_the_fast_path_answers_exactly_as_typer_does(local_home: Path, tmp_path: Path) -> None:
    """Output, errors and exit statuses of the fast path are typer's, case by case."""
    assert run_keeptar("load", str(APP)).returncode == 0  # a stored image to inspect too
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(APP.read_bytes()[:3000])
    text = tmp_path / "notes.txt"
    text.write_text("not an archive\n")
    cases: list[tuple[list[str], Path | None, dict[str, str]]] = [
        ([str(APP)], None, {}),
        (["--json", str(APP)], None, {}),
        ([str(APP), "--json", "--verify"], None, {}),
        (["--no-progress", str(APP)], None, {}),
        (["-"], APP, {}),
        ([], APP, {}),  # TARGET defaults to stdin
        (["kt/app:2.0"], None, {}),  # a stored image, by name
        (["--json", "kt/app:2.0"], None, {"KEEPTAR_BACKEND": ""}),  # empty: unset
        (["kt/app:2.0"], None, {"KEEPTAR_BACKEND": "bogus"}),
        (["no/such:image"], None, {}),
        ([str(tmp_path)], None, {}),
        ([str(truncated)], None, {}),
        ([str(text)], None, {}),
        ([""], None, {}),
    ]
    statuses = set()
    for args, stdin, env in cases:
        fast, typer_path = _both_ways(args, stdin, env)
        assert fast == typer_path, (args, env)
        statuses.add(fast[0])
    assert statuses >= {0, 2, 3, 6}  # the cases reach success and several kinds of error


def test_the_fast_path_ends_quietly_on_a_closed_stdout_as_typer_does() -> None:
    statuses = []
    for command in (["-m", "keeptar"], ["-c", _THROUGH_TYPER]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run(
                [sys.executable, *command, "inspect", str(APP)],
                stdout=write_end,
                stderr=subprocess.PIPE,
                timeout=120,
            )
        finally:
            os.close(write_end)
        statuses.append((result.returncode, result.stderr))
    from keeptar.cli._output import BROKEN_PIPE

    assert statuses == [(BROKEN_PIPE, b"")] * 2
