"""``keeptar migrate19``: migrate a cluster's Docker <= 1.9 (v1) images to v2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keeptar.cli._app import BackendOption, JsonOption, VersionOption, app
from keeptar.cli._output import echo, emit_json, reporting_errors, warn
from keeptar.errors import KeeptarError, UsageError


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _read_pdhs(path: str) -> list[str]:
    """PDHs listed one per line (blank lines and ``#`` comments skipped); ``-`` is stdin."""
    from keeptar.keep.manifest import is_portable_data_hash

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the PDH list {path}: {exc}") from None
    pdhs = []
    for number, line in enumerate(text.splitlines(), 1):
        word = line.split("#", 1)[0].strip()
        if not word:
            continue
        if not is_portable_data_hash(word):
            raise UsageError(f"{path}:{number}: {word[:80]!r} is not a portable data hash")
        pdhs.append(word)
    return pdhs


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _label(old: Any) -> str:
    return ", ".join(old.repo_tags) or "<untagged>"


@app.command("migrate19")
def migrate19_command(
    pdh_file: Annotated[
        str | None,
        typer.Argument(
            help="A file listing the PDHs to migrate, one per line (- for standard input) "
            "[default: every v1 image not migrated yet].",
            show_default=False,
        ),
    ] = None,
    storage_driver: Annotated[
        str,
        typer.Option("--storage-driver", help="The docker engine's inner daemon storage driver."),
    ] = "overlay",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Count the images and their sizes, check space, stop."),
    ] = False,
    print_unmigrated: Annotated[
        bool,
        typer.Option("--print-unmigrated", help="Print the PDHs of images not migrated yet."),
    ] = False,
    tempdir: Annotated[
        str | None,
        typer.Option(
            "--tempdir",
            help="Scratch directory for the docker engine's inner daemon (and the free "
            "space check) [default: the system's temporary directory for the check, "
            "memory for the daemon].",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Go on even with too little free space.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Say more on standard error.")] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="docker: Docker's own conversion in the docker/migrate19 container; "
            "native: keeptar's daemonless zero-copy conversion (same image IDs).",
        ),
    ] = "docker",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Images at once.")] = 1,
    as_json: JsonOption = False,
    backend: BackendOption = None,
    version: VersionOption = False,
) -> None:
    """Migrate Docker <= 1.9 (v1) images to v2, as arv-migrate-docker19 did.

    Each v1 image not migrated yet (one per collection PDH) is converted,
    registered in its own project under its old names and image_timestamp,
    and linked from the old PDH to the new one (a docker_image_migration link
    owned by the system user), so a cluster that accepts only v2 runs it under
    its old name.  Needs an admin token.  Safe to re-run and to run twice at
    once.  Progress [i/N] goes to standard error; --json prints one JSON object
    per line for each image, then a summary.  Exits 1 if any image failed.
    """
    with reporting_errors():
        if engine not in ("docker", "native"):
            raise UsageError(f"--engine must be docker or native, not {engine!r}")
        if dry_run and print_unmigrated:
            raise UsageError("give --dry-run or --print-unmigrated, not both")
        from keeptar.backends import open_backend
        from keeptar.migrate.container import STORAGE_DRIVERS
        from keeptar.migrate.orchestrate import find_unmigrated, require_admin

        if storage_driver not in STORAGE_DRIVERS:
            raise UsageError(
                f"unknown --storage-driver {storage_driver!r}: one of {', '.join(STORAGE_DRIVERS)}"
            )
        if tempdir is not None and not Path(tempdir).is_dir():
            raise UsageError(f"--tempdir {tempdir} is not a directory")
        only = _read_pdhs(pdh_file) if pdh_file is not None else None
        store = open_backend(backend, quiet=True)
        require_admin(store)
        plan = find_unmigrated(store, only)
        if print_unmigrated:
            if as_json:
                emit_json([image.pdh for image in plan.images])
            else:
                for image in plan.images:
                    echo(image.pdh)
            return
        largest = plan.largest
        summary: dict[str, Any] = {
            "summary": True,
            "engine": engine,
            "already_migrated": plan.already_migrated,
            "to_migrate": len(plan.images),
            "total_bytes": plan.total_bytes,
            "largest_pdh": largest.pdh if largest else None,
            "largest_bytes": largest.size if largest else 0,
        }
        if verbose or dry_run:
            _err(f"already migrated: {plan.already_migrated} image(s)")
            _err(f"need to migrate: {len(plan.images)} image(s), {_mib(plan.total_bytes)}")
            if largest is not None:
                _err(f"biggest image: {largest.pdh} ({_mib(largest.size)})")
        space = _check_space(engine, tempdir, largest.size if largest else 0, storage_driver)
        summary.update(space)
        if not space["space_ok"]:
            if not force:
                raise KeeptarError(space["space_message"] + " (--force goes on anyway)")
            warn(f"{space['space_message']}; going on (--force)")
        if dry_run:
            if as_json:
                emit_json(summary)
            else:
                echo(
                    f"{len(plan.images)} image(s) to migrate ({plan.total_bytes} bytes, "
                    f"largest {summary['largest_bytes']} bytes), "
                    f"{plan.already_migrated} already migrated; "
                    f"temporary space needed: {space['space_needed']} bytes"
                )
            return
        converter = None
        if engine == "docker" and plan.images:
            from keeptar.migrate.container import ContainerEngine

            converter = ContainerEngine(
                storage_driver=storage_driver,
                scratch_dir=tempdir,
                notice=lambda line: _err(f"keeptar: note: {line}"),
                log=(lambda line: _err(f"  {line}")) if verbose else None,
            )
            converter.check()  # no daemon: one line naming --engine native
        failed = _run(store, plan.images, converter, jobs, as_json, verbose)
        summary.update({"migrated": len(plan.images) - failed, "failed": failed})
        if as_json:
            echo(json.dumps(summary))
        else:
            echo(f"Successfully migrated {len(plan.images) - failed} image(s)")
            if failed:
                echo(f"Failed to migrate {failed} image(s)")
    if failed:
        raise typer.Exit(1)


def _check_space(engine: str, tempdir: str | None, largest: int, driver: str) -> dict[str, Any]:
    """The free-space check for *engine*: the docker engine's as the original tool's."""
    import tempfile

    from keeptar.migrate.container import check_free_space, required_space

    if engine == "native":  # reads from Keep, writes one small block per image
        return {"space_needed": 0, "space_ok": True, "space_message": ""}
    where = tempdir or tempfile.gettempdir()
    try:
        available, needed = check_free_space(where, largest, driver)
    except KeeptarError as exc:
        return {
            "space_needed": required_space(largest, driver),
            "space_ok": False,
            "space_message": str(exc),
        }
    return {
        "space_needed": needed,
        "space_available": available,
        "space_ok": True,
        "space_message": "",
    }


def _run(store: Any, images: Any, converter: Any, jobs: int, as_json: bool, verbose: bool) -> int:
    from keeptar.migrate.orchestrate import ImageOutcome, OldImage, migrate_images

    total = len(images)
    failed = 0

    def start(index: int, old: OldImage) -> None:
        _err(
            f"[{index}/{total}] migrating {_label(old)} ({old.collection}, {old.pdh}, "
            f"{_mib(old.size)})"
        )

    def done(outcome: ImageOutcome) -> None:
        nonlocal failed
        if not outcome.ok:
            failed += 1
        if as_json:
            echo(json.dumps(outcome.to_json()))
            return
        index = f"[{outcome.index}/{total}]"
        if outcome.ok:
            echo(
                f"{index} migrated {outcome.old.pdh} ({_label(outcome.old)}) -> "
                f"{outcome.pdh} ({outcome.collection}), image {outcome.image_id}"
            )
        else:
            echo(f"{index} FAILED {outcome.old.pdh} ({_label(outcome.old)}): {outcome.error}")

    migrate_images(store, images, engine=converter, jobs=jobs, on_start=start, on_done=done)
    return failed
