"""``keeptar convert``: a Docker v1 archive to a v2 archive current Docker can load."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer

from keeptar.archive import find_image_file
from keeptar.backends import open_backend
from keeptar.catalog.references import parse_image_ref
from keeptar.cli._app import BackendOption, JsonOption, ProgressOption, VersionOption, app
from keeptar.cli._output import emit_json, progress_reporter, reporting_errors, warn
from keeptar.errors import UsageError
from keeptar.keep.blocks import KeepFileReader
from keeptar.keep.manifest import is_collection_ref
from keeptar.migrate import StreamResult, convert_stream
from keeptar.streaming.sources import ByteSource, open_source


@app.command("convert")
def convert_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A Docker v1 archive: a .tar file (plain or gzip/zstd/xz/bzip2), - for "
            "standard input, or a collection PDH or UUID.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o", "--output", help="Write the v2 archive to this file [default: standard output]."
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            help="REPO[:TAG] for manifest.json (TAG defaults to latest), repeatable "
            "[default: the v1 archive's tags].",
        ),
    ] = None,
    as_json: JsonOption = False,
    progress: ProgressOption = None,
    backend: BackendOption = None,
    version: VersionOption = False,
) -> None:
    """Convert a Docker <= 1.9 (v1) archive to a v2 archive that Docker 25+ and 29 can load.

    The image ID is the one Docker 20.10's legacy `docker load` gives the v1
    archive.  The output is the v1 archive's members, unchanged, followed by
    the new configs and manifest.json, written as a stream (an uncompressed
    tar).  A v2 or OCI archive is copied through unchanged, with a note on
    stderr.  --json prints a summary, so it needs -o.
    """
    with reporting_errors():
        tag = [str(parse_image_ref(name)) for name in tag] if tag else None
        to_stdout = output in (None, "-")
        if to_stdout and as_json:
            raise UsageError("--json prints a summary on standard output: give -o FILE too")
        if to_stdout and sys.stdout.isatty():
            raise UsageError(
                "refusing to write a tar archive to a terminal: give -o FILE or redirect"
            )
        with (
            _opened(source, backend) as (src, size),
            progress_reporter(progress, size, "convert") as report,
        ):
            if to_stdout:
                sys.stdout.flush()
                result = convert_stream(src, sys.stdout.buffer, repo_tags=tag, progress=report)
                sys.stdout.buffer.flush()
            else:
                assert output is not None
                result = _to_file(src, Path(output), tag, report)
    doc = _summary(source, output, result)
    if result.conversion is None:
        typer.echo(
            f"keeptar: note: {source} is a {result.format.value} archive, not Docker v1: "
            "copied through unchanged",
            err=True,
        )
    for image in [] if result.conversion is None else result.conversion.images:
        if image.containerd_unreadable:
            warn(
                f"image {image.id[7:19]} keeps "
                f"{len(image.containerd_unreadable)} bzip2/xz-compressed layer(s) as they are: "
                "Docker's classic image store loads them, containerd's (the default of "
                "Docker 29) does not"
            )
    if as_json:
        emit_json(doc)
        return
    lines = []
    for image in doc["images"]:
        names = ", ".join(image["repo_tags"]) or "<untagged>"
        lines.append(f"v1 image {image['v1_id'][:12]} ({names}) -> {image['id']}")
    where = "standard output" if to_stdout else output
    lines.append(f"wrote {doc['bytes']} bytes to {where}")
    typer.echo("\n".join(lines), err=to_stdout)


def _summary(source: str, output: str | None, result: StreamResult) -> dict[str, Any]:
    images = [] if result.conversion is None else result.conversion.images
    return {
        "source": source,
        "output": output or "-",
        "format": result.format.value,
        "converted": result.conversion is not None,
        "images": [image.to_json() for image in images],
        "bytes": result.bytes_written,
    }


def _to_file(src: ByteSource, path: Path, tag: list[str] | None, report: Any) -> StreamResult:
    """Write to a temporary file beside *path*, renamed into place only on success."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{path} is a directory")
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            result = convert_stream(src, out, repo_tags=tag, progress=report)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return result


@contextlib.contextmanager
def _opened(source: str, backend: str | None) -> Iterator[tuple[ByteSource, int | None]]:
    if source != "-" and not Path(source).exists() and is_collection_ref(source):
        store = open_backend(backend, quiet=True)
        _, item = find_image_file(store, source)
        reader: BinaryIO = KeepFileReader(  # type: ignore[assignment]
            store.get_block, item, name=f"{source}/{item.path}"
        )
        yield ByteSource(reader, f"{source}/{item.path}"), item.size
        return
    with open_source(source) as src:
        yield src, src.size
