"""``keeptar gc``: delete blocks of the embedded store that no collection references."""

from __future__ import annotations

from typing import Annotated

import typer

from keeptar.cli._app import BackendOption, JsonOption, VersionOption, app
from keeptar.cli._output import echo, emit_json, reporting_errors
from keeptar.errors import UsageError


@app.command("gc")
def gc_command(
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="Keep unreferenced blocks written less than this long ago: seconds, or a "
            "number with s, m, h, d or w (0, 3600s, 12h, 2w).",
        ),
    ] = "2w",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Only count what would be deleted.")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            help="Seconds to wait for running loads to finish before giving up (exit 7).",
        ),
    ] = 60.0,
    backend: BackendOption = None,
    as_json: JsonOption = False,
    version: VersionOption = False,
) -> None:
    """Delete blocks that no collection references, as keep-balance does on a cluster.

    For the embedded store only; safe while loads run (a block a load has not
    registered yet is never deleted).  On Arvados, the cluster's keep-balance
    does this.
    """
    with reporting_errors():
        from keeptar.backends import open_backend
        from keeptar.backends.gc import collect_garbage, parse_duration

        grace_seconds = parse_duration(grace)
        store = open_backend(backend, quiet=True)
        if store.kind != "local":
            raise UsageError(
                "keeptar gc is for the embedded store: on Arvados, the cluster's "
                "keep-balance deletes blocks that no collection references"
            )
        from keeptar.backends.embedded import EmbeddedBackend

        assert isinstance(store, EmbeddedBackend)
        report = collect_garbage(store, grace_seconds=grace_seconds, dry_run=dry_run, wait=wait)
    if as_json:
        emit_json(report.to_json())
        return
    verb = "would delete" if dry_run else "deleted"
    echo(f"{verb} {_blocks(report.deleted_blocks)} ({_size(report.deleted_bytes)})")
    echo(
        f"kept {_blocks(report.referenced_blocks)} that collections reference "
        f"({_size(report.referenced_bytes)}) and {_blocks(report.recent_blocks)} that none "
        f"does, written less than {grace} ago ({_size(report.recent_bytes)})"
    )
    if report.stale_temporary_files:
        verb = "would remove" if dry_run else "removed"
        echo(f"{verb} {report.stale_temporary_files} half-written temporary files")


def _blocks(count: int) -> str:
    return f"{count} block{'s' * (count != 1)}"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
