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

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypedDict, TypeVar, cast

from keeptar._source_kind import SourceKind
from keeptar.errors import UsageError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from keeptar.backends import Backend
    from keeptar.load import LoadResult

__all__ = ["LoadOptions", "load_archive", "load_collection", "load_docker_image"]


class LoadOptions(TypedDict, total=False):
    """The keyword arguments every entry point takes, as :func:`load_archive` documents.

    Each may be left out: then None, or False for the two ``force`` flags.
    """

    project_uuid: str | None
    tag: str | None
    name: str | None
    force: bool
    force_image_format: bool
    warn: Callable[[str], None] | None


#: Defaults of :class:`LoadOptions` other than None (``keeptar.load.load_image``'s).
_OPTION_DEFAULTS: dict[str, Any] = {"force": False, "force_image_format": False}

_Function = TypeVar("_Function", bound=Callable[..., Any])


def _lists_options(function: _Function) -> _Function:
    """*function* with each :class:`LoadOptions` keyword, typed and with its default, in
    its signature (what ``help()`` shows) instead of ``**options``, and held to it: any
    other keyword is a TypeError, as for a function that spells its keywords out."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    options = [
        inspect.Parameter(
            key,
            inspect.Parameter.KEYWORD_ONLY,
            default=_OPTION_DEFAULTS.get(key),
            annotation=getattr(hint, "__forward_arg__", hint),  # the text, as for the others
        )
        for key, hint in LoadOptions.__annotations__.items()
    ]
    listed = signature.replace(parameters=own + options)

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        listed.bind(*args, **kwargs)  # TypeError: an unknown keyword, a missing argument
        return function(*args, **kwargs)

    checked.__signature__ = listed  # type: ignore[attr-defined]
    return cast("_Function", checked)


@_lists_options
def load_archive(
    backend: Backend,
    archive: str | os.PathLike[str] | BinaryIO,
    /,
    *,
    image: str | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Unpack[LoadOptions],
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
        image=image,
        progress=progress,
        **options,
    )


@_lists_options
def load_collection(
    backend: Backend,
    ref: str,
    /,
    *,
    image: str | None = None,
    **options: Unpack[LoadOptions],
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
    if options.get("project_uuid") == "source":
        options["project_uuid"] = str(backend.get_collection(ref)["owner_uuid"])
    return load_image(backend, ref, source_kind=SourceKind.COLLECTION, image=image, **options)


@_lists_options
def load_docker_image(
    backend: Backend,
    image: str,
    /,
    *,
    progress: Callable[[int], None] | None = None,
    **options: Unpack[LoadOptions],
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
    return load_image(backend, image, source_kind=SourceKind.DOCKER, progress=progress, **options)
