"""The typed library entry points for loading images: one function per kind of source.

Each is thin over :func:`keeptar.load.load_image`, exported from :mod:`keeptar`
with :func:`~keeptar.backends.open_backend`::

    from keeptar import load_archive, open_backend
    result = load_archive(open_backend(), "image.tar", tag="kt/app:1")
    print(result.uuid, result.image_id)

The library never reads ``sys.stdin`` (pass ``sys.stdin.buffer`` to
:func:`load_archive` to load from it) and its errors name the parameters of
these functions, never the command line's flags.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from keeptar._source_kind import SourceKind
from keeptar.errors import UsageError

if TYPE_CHECKING:
    from keeptar.backends import Backend
    from keeptar.load import LoadResult

__all__ = ["load_archive", "load_collection", "load_docker_image"]


def load_archive(
    backend: Backend,
    archive: str | os.PathLike[str] | BinaryIO,
    /,
    *,
    project_uuid: str | None = None,
    tag: str | None = None,
    image: str | None = None,
    name: str | None = None,
    force: bool = False,
    force_image_format: bool = False,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
    resume: bool = False,
) -> LoadResult:
    """Store the image archive *archive* in *backend* and register it as ``arv-keepdocker`` does.

    Args:
        backend: where to store it (:func:`~keeptar.backends.open_backend`).
        archive: a path (a plain or compressed tar, a named pipe, or a file in an
            arv-mount, whose blocks are then reused), or a binary stream read once
            from where it stands (``"-"`` is a file named ``-``, not stdin).
        project_uuid: the owner project (default: the user's home project).
        tag: ``repo[:tag]`` to register instead of the archive's own tags.
        image: which image of a multi-image archive (ID prefix or ``repo:tag``).
        name: the collection name (default ``Docker image REPO:TAG HASH12``).
        force: a new collection even if the image is stored already.
        force_image_format: store an image the cluster's dockerImageFormats refuses.
        progress: called with the number of input bytes read so far.
        warn: called with each one-line warning (a skipped tag, say), once each.
        resume: on Arvados, from a path to a regular file: record the signed locator
            of each block stored in ``~/.cache/keeptar/resume/``, so that a call after
            a failure or kill, also with *resume*, uploads only the blocks missing (as
            ``arv-put``).  Off by default: nothing is written to disk.

    Returns:
        What was registered (:class:`keeptar.load.LoadResult`).

    Raises:
        KeeptarError: a subclass from :mod:`keeptar.errors`; nothing is left registered.
    """
    from keeptar.load import load_image

    stream: BinaryIO | None = None
    path: str | None = None
    kind: SourceKind | None = None
    if isinstance(archive, (str, os.PathLike)):
        path = os.fspath(archive)
        if not path:
            raise UsageError("the archive path is empty")
        if path == "-":
            path = os.path.join(os.curdir, path)  # a file named "-": the library reads no stdin
        # An existing file may be inside an arv-mount (worked out); anything else must be a
        # readable file or a named pipe, never a collection or a Docker image by accident.
        if not (Path(path).is_file() or Path(path).is_dir()):
            kind = SourceKind.FILE
    else:
        stream = archive
    return load_image(
        backend,
        path,
        source_kind=kind,
        input_stream=stream,
        project_uuid=project_uuid,
        tag=tag,
        image=image,
        name=name,
        force=force,
        force_image_format=force_image_format,
        progress=progress,
        warn=warn,
        resume=resume,
    )


def load_collection(
    backend: Backend,
    ref: str,
    /,
    *,
    project_uuid: str | None = None,
    tag: str | None = None,
    image: str | None = None,
    name: str | None = None,
    force: bool = False,
    force_image_format: bool = False,
    warn: Callable[[str], None] | None = None,
) -> LoadResult:
    """Register the image archive stored in collection *ref* (a PDH or UUID), reusing its blocks.

    No archive byte is uploaded again: the registered collection is made from the
    source's blocks (plus one small block if the archive must be made loadable).
    *project_uuid* ``"source"`` is the project that holds the source collection.
    The other arguments are as for :func:`load_archive`.

    Raises:
        UsageError: *ref* is not a collection PDH or UUID.
        NotFoundError: no such collection, or it holds no ``.tar`` file.
        KeeptarError: as :func:`load_archive`.
    """
    from keeptar.keep.manifest import is_collection_ref
    from keeptar.load import load_image

    if not is_collection_ref(ref):
        raise UsageError(f"{ref!r} is not a collection PDH or UUID")
    if project_uuid == "source":
        project_uuid = str(backend.get_collection(ref)["owner_uuid"])
    return load_image(
        backend,
        ref,
        source_kind=SourceKind.COLLECTION,
        project_uuid=project_uuid,
        tag=tag,
        image=image,
        name=name,
        force=force,
        force_image_format=force_image_format,
        warn=warn,
    )


def load_docker_image(
    backend: Backend,
    image: str,
    /,
    *,
    project_uuid: str | None = None,
    tag: str | None = None,
    name: str | None = None,
    force: bool = False,
    force_image_format: bool = False,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> LoadResult:
    """Save the local Docker daemon's image *image* (a name or an ID) and store it.

    As ``arv-keepdocker``: the image is saved by ID, and registered under *image*
    when that is a name (or under *tag*).  Needs the ``docker`` command.
    The other arguments are as for :func:`load_archive`.

    Raises:
        NotFoundError: the daemon has no such image.
        KeeptarError: as :func:`load_archive`, or ``docker`` failed.
    """
    from keeptar.load import load_image

    if not image:
        raise UsageError("the Docker image name is empty")
    return load_image(
        backend,
        image,
        source_kind=SourceKind.DOCKER,
        project_uuid=project_uuid,
        tag=tag,
        name=name,
        force=force,
        force_image_format=force_image_format,
        progress=progress,
        warn=warn,
    )
