"""``keeptar load``: put an image archive into Keep and register it as Arvados does.

Sources (:class:`SourceKind`): a file, standard input, an arv-mount path, an
existing collection (PDH or UUID), or ``docker save`` of a local image.
Archive bytes go through one pass: decompression, tar reading and Keep block
hashing/upload run together, and compressed input is stored decompressed.
Files already in a collection on the same backend are registered by reusing
their blocks.

Registration matches ``arv-keepdocker``: one file ``<image id>.tar`` per
collection, the ``docker-image-repo-tag`` property, a ``docker_image_hash``
link and ``docker_image_repo+tag`` links, each with ``image_timestamp``.
Nothing is registered until every block is stored.  The rules for
registering (names, links, owner, reuse, adoption, rollback) live in
:mod:`keeptar.catalog.registration`: a registration is never doubled and never
half-done, and loading again is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from keeptar._source_kind import SourceKind
from keeptar._subprocess import child_environment, child_message
from keeptar.archive import find_image_file, inspect_source
from keeptar.backends import Backend, Record
from keeptar.catalog.loadable import (
    is_loadable,
    plan_rewrite,
    rewrite_manifest,
    scan_archive,
    unloadable_warning,
)
from keeptar.catalog.references import (
    abbreviate,
    collection_name_problem,
    link_name_problem,
    parse_image_ref,
    reference_problem,
    same_repository_names,
    split_image_ref,
)
from keeptar.catalog.registration import (
    ImageRegistration,
    Registered,
    collection_name,
    register_image,
    resolve_owner,
    reuse_image,
)
from keeptar.errors import (
    ArchiveError,
    ConflictError,
    KeeptarError,
    NotFoundError,
    Parameter,
    UsageError,
    naming,
)
from keeptar.formats import ArchiveScanner, ImageInfo, read_images
from keeptar.formats.loadable import Rewrite
from keeptar.keep.blocks import BlockWriter, KeepFileReader, StoredStream, store_file
from keeptar.keep.manifest import (
    BLOCK_SIZE,
    is_collection_ref,
    is_portable_data_hash,
    manifest_from_segments,
    parse_manifest,
    portable_data_hash,
    single_file_manifest,
)
from keeptar.keep.resume import ResumeCache
from keeptar.keep.segments import stream_segments
from keeptar.streaming.decompress import MAGIC_LENGTH, Compression, detect_compression
from keeptar.streaming.sources import ByteSource, open_source, run_tar_stream

__all__ = ["LoadResult", "SourceKind", "collection_name", "detect_source", "load_image"]

_MOUNT_RECORD = ".arvados#collection"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What ``keeptar load`` registered.

    Attributes:
        uuid: the image collection.
        portable_data_hash: its PDH.
        image_id: the image ID (the stored file is ``<image_id>.tar``).
        repo_tag: the primary ``repo:tag``, if any.
        file_name: the stored file's name.
        format: the archive layout.
        created: the image's creation time, as its config has it.
        reused: True if an existing collection or its blocks were reused
            instead of uploading.
    """

    uuid: str
    portable_data_hash: str
    image_id: str
    repo_tag: str | None
    file_name: str
    format: str
    created: str | None
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        """The ``keeptar load --json`` document."""
        return {
            "uuid": self.uuid,
            "portable_data_hash": self.portable_data_hash,
            "image_id": self.image_id,
            "repo_tag": self.repo_tag,
            "file_name": self.file_name,
            "format": self.format,
            "created": self.created,
        }


@dataclass(frozen=True, slots=True)
class _CollectionFile:
    """A file inside a collection: ``collection`` is a PDH or UUID, ``path`` may be empty."""

    collection: str
    path: str


# ---- working out the source ------------------------------------------------------------


def _mount_file(path: Path) -> _CollectionFile | None:
    """The collection file behind an arv-mount path, if it is one."""
    resolved = path.absolute()
    for parent in resolved.parents:
        record = parent / _MOUNT_RECORD
        with contextlib.suppress(OSError, ValueError):
            if record.is_file():
                doc = json.loads(record.read_text())
                ident = doc.get("uuid") or doc.get("portable_data_hash")
                if isinstance(ident, str) and ident:
                    return _CollectionFile(ident, resolved.relative_to(parent).as_posix())
    parts = resolved.parts
    for index, part in enumerate(parts[:-1]):
        if is_collection_ref(part):
            return _CollectionFile(part, "/".join(parts[index + 1 :]))
    return None


def detect_source(
    argument: str | None, forced: SourceKind | None = None, *, stdin_is_tty: bool | None = None
) -> tuple[SourceKind, str]:
    """Decide what kind of source *argument* is.

    Without *forced*: no argument or ``-`` is standard input (no argument only
    when stdin is not a terminal); an existing path is a file, or an arv-mount
    path when it lies inside a mounted collection; a named pipe (``mkfifo``, or
    ``<(…)`` as a ``/dev/fd/N`` path) is a file read as a stream; a PDH or collection UUID is
    a collection.  Anything else is an error, never a guess: ``--from docker``
    is needed to save an image from the local daemon.

    Raises:
        UsageError: the argument is missing, ambiguous or unknown.
    """
    if forced is not None:
        if forced is SourceKind.STDIN:
            if argument not in (None, "-"):
                raise UsageError("--from stdin takes no source argument (or -)")
            return forced, "-"
        if not argument or argument == "-":
            raise UsageError(f"--from {forced.value} needs a source argument")
        if forced is SourceKind.FILE and not (Path(argument).is_file() or _is_stream(argument)):
            raise UsageError(f"{argument}: no such file")
        if forced is SourceKind.ARV_MOUNT and not Path(argument).is_file():
            raise UsageError(f"{argument}: no such file")
        if forced is SourceKind.COLLECTION and not is_collection_ref(argument):
            raise UsageError(f"{argument!r} is not a collection PDH or UUID")
        return forced, argument
    if argument is None or argument == "-":
        if argument is None and (sys.stdin.isatty() if stdin_is_tty is None else stdin_is_tty):
            raise UsageError(
                "give an image archive (a file, - for standard input, a collection, "
                "or --from docker IMAGE)"
            )
        return SourceKind.STDIN, "-"
    path = Path(argument)
    if path.is_dir():
        raise UsageError(f"{argument} is a directory, not an image archive")
    if path.is_file():
        kind = SourceKind.ARV_MOUNT if _mount_file(path) else SourceKind.FILE
        return kind, argument
    if _is_stream(argument):  # a FIFO, or <(…) (/dev/fd/N): read as a stream, as stdin
        return SourceKind.FILE, argument
    if is_collection_ref(argument):
        return SourceKind.COLLECTION, argument
    raise UsageError(
        f"{argument!r} is not a file, a collection PDH or a collection UUID "
        "(to save an image from the local Docker daemon, use --from docker)"
    )


# ---- choosing and checking the image ---------------------------------------------------


def _refuse_what_docker_refuses(problems: Sequence[str]) -> None:
    """crunch-run runs images with ``docker load``: store nothing it would refuse."""
    if problems:
        raise ArchiveError(problems[0])


def _choose_image(images: Sequence[ImageInfo], wanted: str | None) -> ImageInfo:
    if wanted is None:
        if len(images) == 1:
            return images[0]
        listing = ", ".join(
            f"{image.id} ({', '.join(image.repo_tags) or 'untagged'})" for image in images
        )
        raise naming(
            UsageError,
            f"the archive holds {len(images)} images; choose one with ",
            Parameter("image"),
            f": {listing}",
        )
    bare = wanted.removeprefix("sha256:")
    by_id = [i for i in images if bare and i.id.removeprefix("sha256:").startswith(bare)]
    if len(by_id) == 1:
        return by_id[0]
    ref = split_image_ref(wanted)
    spellings = {f"{name}:{ref.tag}" for name in same_repository_names(ref.repo)}
    by_tag = [i for i in images if spellings & set(i.repo_tags) or wanted in i.repo_tags]
    if len(by_tag) == 1:
        return by_tag[0]
    ids = ", ".join(i.id for i in images)
    raise naming(
        UsageError,
        Parameter("image"),
        f" {wanted!r} matches {len(by_id) or len(by_tag)} of the images: {ids}",
    )


def _check_format(backend: Backend, image: ImageInfo, force: bool) -> None:
    """Refuse an image whose format the server's dockerImageFormats does not accept."""
    formats = backend.server_facts().docker_image_formats
    needed = "v1" if image.format.is_v1 else "v2"
    if needed in formats or force:
        return
    accepted = ", ".join(formats) or "none"
    hint = "convert it with `keeptar migrate19`, or pass " if needed == "v1" else "pass "
    raise naming(
        ConflictError,
        f"image {image.id} is a Docker {needed} image, but this cluster accepts "
        f"{accepted} (dockerImageFormats); {hint}",
        Parameter("force_image_format"),
        "" if needed == "v1" else " to store it anyway",
    )


def _repo_tags(image: ImageInfo, tag: str | None, skipped: list[str] | None = None) -> list[str]:
    """The names to register, never rewritten: ``--tag`` as typed, or the archive's RepoTags.

    RepoTags that Docker's grammar or the API server refuses are left out, each
    with a reason appended to *skipped*.
    """
    if tag is not None:
        return [str(parse_image_ref(tag))]
    tags: list[str] = []
    for raw in image.repo_tags:
        problem = reference_problem(raw) or link_name_problem(raw)
        if problem is not None:
            if skipped is not None:
                skipped.append(f"archive tag {abbreviate(raw)} is not registered: {problem}")
        elif raw not in tags:
            tags.append(raw)
    return tags


def _check_names(target: _Target, image: ImageInfo) -> None:
    """Before anything is stored: warn about skipped RepoTags, refuse a name the server would.

    Raises:
        UsageError: the collection name (given, or made from a long tag) is refused.
    """
    skipped: list[str] = []
    tags = _repo_tags(image, target.tag, skipped)
    if target.warn is not None:
        for message in skipped:
            target.warn(message)
    name = target.name or collection_name(image.id, tags[0] if tags else None)
    problem = collection_name_problem(name)
    if problem is not None:
        if target.name:
            raise UsageError(problem)
        raise naming(
            UsageError,
            f"{problem} (made from the tag; give a shorter one with ",
            Parameter("name"),
            ")",
        )


# ---- the plan every source ends in ------------------------------------------------------


@dataclass(slots=True)
class _Target:
    backend: Backend
    owner_uuid: str
    tag: str | None
    name: str | None
    force: bool
    warn: Callable[[str], None] | None = None
    #: resume an interrupted load from a cache of signed locators (a regular file only)
    resume: bool = False


def _request(target: _Target, image: ImageInfo) -> ImageRegistration:
    return ImageRegistration(
        image_id=image.id,
        file_name=image.file_name,
        owner_uuid=target.owner_uuid,
        repo_tags=tuple(_repo_tags(image, target.tag)),
        image_timestamp=image.created,
        name=target.name,
    )


def _reuse_existing(target: _Target, image: ImageInfo) -> LoadResult | None:
    """Register *image* from a collection that already holds it, if there is one."""
    if target.force:
        return None
    accept, unloadable = _loadable_filter(target, image)
    registered = reuse_image(target.backend, _request(target, image), accept=accept)
    if registered is None:
        _warn_unloadable(target, image, unloadable)
        return None
    return _result(target, image, registered, None)


def _loadable_filter(
    target: _Target, image: ImageInfo
) -> tuple[Callable[[Record], bool], list[str]]:
    """A reuse filter that accepts only collections a compute node can load as *image*,
    and the list it records the refused collections in."""
    refused: list[str] = []

    def accept(candidate: Record) -> bool:
        if is_loadable(target.backend, candidate["manifest_text"], image):
            return True
        refused.append(candidate["uuid"])
        return False

    return accept, refused


def _warn_unloadable(target: _Target, image: ImageInfo, unloadable: list[str]) -> None:
    if unloadable and target.warn is not None:
        target.warn(unloadable_warning(image.id, list(dict.fromkeys(unloadable))))


def _register(
    target: _Target,
    image: ImageInfo,
    *,
    manifest_text: str | None = None,
    existing: Record | None = None,
    reused: bool = False,
) -> LoadResult:
    """Register *image* (see :func:`keeptar.catalog.registration.register_image`)."""
    accept, unloadable = _loadable_filter(target, image)
    registered = register_image(
        target.backend,
        _request(target, image),
        manifest_text=manifest_text,
        existing=existing,
        force=target.force,
        accept=accept,
    )
    if not registered.reused:
        _warn_unloadable(target, image, unloadable)
    return _result(target, image, registered, manifest_text, reused=reused)


def _result(
    target: _Target,
    image: ImageInfo,
    registered: Registered,
    manifest_text: str | None,
    *,
    reused: bool = False,
) -> LoadResult:
    tags = _repo_tags(image, target.tag)
    return LoadResult(
        uuid=registered.uuid,
        portable_data_hash=registered.portable_data_hash,
        image_id=image.id,
        repo_tag=tags[0] if tags else None,
        file_name=image.file_name,
        format=_stored_format(target.backend, registered, image, manifest_text),
        created=image.created,
        reused=reused or registered.reused,
    )


def _stored_format(
    backend: Backend, registered: Registered, image: ImageInfo, manifest_text: str | None
) -> str:
    """The layout of the archive registered: the input's, unless an existing copy
    (maybe of another layout, e.g. docker-archive for an OCI input) was registered."""
    source = registered.copied_from
    if source is None or (
        manifest_text is not None
        and source.get("portable_data_hash") == portable_data_hash(manifest_text)
    ):
        return image.format.value
    try:
        _, item = find_image_file(backend, registered.uuid, "")
        reader = KeepFileReader(backend.get_block, item, name=f"{registered.uuid}/{item.path}")
        info = inspect_source(ByteSource(reader, reader.name))  # type: ignore[arg-type]
    except KeeptarError:
        return image.format.value
    for stored in info.images:
        if stored.id == image.id:
            return stored.format.value
    return image.format.value


# ---- sources ----------------------------------------------------------------------------


def _load_stream(
    target: _Target,
    source: ByteSource,
    *,
    image_ref: str | None,
    force_image_format: bool,
    progress: Callable[[int], None] | None,
) -> LoadResult:
    """One pass over archive bytes: read the tar while storing every byte as Keep blocks."""
    backend = target.backend
    scanner = ArchiveScanner()
    with (
        _resuming(target, source) as resume,
        BlockWriter(backend.put_block, detach=not backend.stores_in_place, resume=resume) as writer,
    ):
        # The README's memory promise, whatever window a zstd --long stream announces:
        run_tar_stream(
            source, scanner, tap=writer.write, progress=progress, on_window=writer.fit_window
        )
        _, images = read_images(scanner.scan)
        _refuse_what_docker_refuses(scanner.scan.docker_load_problems())
        image = _choose_image(images, image_ref)
        _check_format(backend, image, force_image_format)
        _check_names(target, image)
        rewrite = plan_rewrite(scanner.scan, images, image, _repo_tags(image, target.tag))
        stored = writer.finish()
        return _register_stored(target, image, stored, rewrite)


@contextlib.contextmanager
def _resuming(target: _Target, source: ByteSource) -> Iterator[ResumeCache | None]:
    """The resume cache of a load of the regular file *source*, if the store needs one.

    Deleted when the block leaves normally (the image is registered), kept when it
    leaves by an exception, so that a re-run resumes (see :mod:`keeptar.keep.resume`).
    """
    scope = target.backend.resume_scope() if target.resume and source.fd is not None else None
    status = os.fstat(source.fd) if scope is not None and source.fd is not None else None
    if scope is None or status is None or not stat.S_ISREG(status.st_mode):
        yield None
        return
    cache = ResumeCache(scope, source.name, status, BLOCK_SIZE, head=target.backend.has_block)
    try:
        yield cache
    except BaseException:
        cache.close()
        raise
    cache.discard()


def _register_stored(
    target: _Target, image: ImageInfo, stored: StoredStream, rewrite: Rewrite | None = None
) -> LoadResult:
    """Register freshly stored bytes as *image*.

    Unless ``--force``, the registration looks for the image once more first (in
    the same transaction on the embedded store): another load may have registered
    it while these bytes were uploading, and the stored blocks are the same either
    way (content-addressed), so reuse beats a duplicate collection.
    With *rewrite*, the file stored is the loadable single-image form of those bytes.
    """
    manifest = single_file_manifest(image.file_name, stored.locators, stored.size)
    if rewrite is not None:
        segments = stream_segments(stored.locators)
        manifest = rewrite_manifest(target.backend, segments, rewrite, image.file_name)
    return _register(target, image, manifest_text=manifest)


def _load_plain_file(
    target: _Target,
    source: ByteSource,
    *,
    image_ref: str | None,
    force_image_format: bool,
    progress: Callable[[int], None] | None,
) -> LoadResult:
    """A plain tar on disk: its metadata first, then each block read once.

    The metadata pass takes milliseconds (layers are seeked over), so an image that
    is stored already, or a format the cluster refuses, costs no upload.  A file
    that changes meanwhile is refused: what was stored may not be what was read.
    """
    backend = target.backend
    assert source.fd is not None
    status = os.fstat(source.fd)
    parsed = _ParsedBytes(source.name)
    source.on_read = parsed.record
    try:
        scan, images = scan_archive(source)
    finally:
        source.on_read = None
    _refuse_what_docker_refuses(scan.docker_load_problems())
    image = _choose_image(images, image_ref)
    _check_format(backend, image, force_image_format)
    _check_names(target, image)
    rewrite = plan_rewrite(scan, images, image, _repo_tags(image, target.tag))
    with _resuming(target, source) as resume:
        if not target.force:
            found = _reuse_existing(target, image)
            if found is not None:
                return found
        stored = store_file(
            backend.put_block,
            source.fd,
            status.st_size,
            detach=not backend.stores_in_place,
            progress=progress,
            # Resuming: blocks an interrupted run stored are not stored again (not with
            # --force, which rewrites them all, repairing any damaged in place).
            is_stored=backend.has_block
            if backend.confirms_stored_blocks and not target.force
            else None,
            # On Arvados, from the signed locators it recorded (as arv-keepdocker, also
            # with --force: a HEAD checks each block; --no-resume uploads everything).
            resume=resume,
            check=parsed.check,
        )
        if _identity(os.fstat(source.fd)) != _identity(status):
            raise ArchiveError(f"{source.name} changed while it was being loaded; load it again")
        return _register_stored(target, image, stored, rewrite)


def _load_collection_file(
    target: _Target,
    ref: _CollectionFile,
    *,
    image_ref: str | None,
    force_image_format: bool,
) -> LoadResult:
    """Register a file already in Keep by reusing its blocks (#9147)."""
    backend = target.backend
    record, item = find_image_file(backend, ref.collection, ref.path)
    reader = KeepFileReader(backend.get_block, item, name=f"{ref.collection}/{item.path}")
    compression = detect_compression(reader.read(MAGIC_LENGTH))
    if compression is not Compression.NONE:
        # Decided from the first block: a compressed file would be read whole for nothing.
        raise UsageError(
            f"{reader.name} is {compression.value}-compressed; Arvados needs a plain .tar, "
            "so load it from a file or stdin to store it decompressed"
        )
    reader.seek(0)
    scan, images = scan_archive(ByteSource(reader, reader.name))  # type: ignore[arg-type]
    _refuse_what_docker_refuses(scan.docker_load_problems())
    image = _choose_image(images, image_ref)
    _check_format(backend, image, force_image_format)
    _check_names(target, image)
    rewrite = plan_rewrite(scan, images, image, _repo_tags(image, target.tag))
    if not target.force:
        found = _reuse_existing(target, image)
        if found is not None:
            return found
    if rewrite is not None:
        manifest = rewrite_manifest(backend, item.segments, rewrite, image.file_name)
        return _register(target, image, manifest_text=manifest, reused=True)
    files = parse_manifest(record["manifest_text"])
    if (  # --force: a new collection from the same blocks, never the source itself
        not target.force
        and record.get("owner_uuid") == target.owner_uuid
        and len(files) == 1
        and files[0].path == image.file_name
        and "uuid" in record
        and not is_portable_data_hash(record["uuid"])
    ):
        return _register(target, image, existing=record, reused=True)
    manifest = manifest_from_segments(image.file_name, item.segments)
    return _register(target, image, manifest_text=manifest, reused=True)


def _docker_image_id(image: str) -> str:
    """The ID of the local Docker image *image* (a name or an ID), from ``docker image inspect``."""
    if shutil.which("docker") is None:
        raise UsageError("loading from Docker needs the docker command and a running Docker daemon")
    process = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", "--", image],
        capture_output=True,
        env=child_environment(),
        check=False,
    )
    if process.returncode != 0:
        _docker_failed("image inspect", image, process.returncode, process.stderr)
    ids = process.stdout.decode(errors="replace").split()
    if len(ids) != 1 or not ids[0].startswith("sha256:"):
        raise KeeptarError(
            f"docker image inspect {image} gave no image ID: {child_message(process.stdout)}"
        )
    return ids[0]


def _is_id_reference(image: str, image_id: str) -> bool:
    """Whether *image* names the image by (a prefix of) its ID rather than by a name."""
    bare = image.lower().removeprefix("sha256:")
    return (
        len(bare) >= 1
        and image_id.removeprefix("sha256:").startswith(bare)
        and all(c in "0123456789abcdef" for c in bare)
    )


@contextlib.contextmanager
def _docker_save(image_id: str) -> Iterator[ByteSource]:
    """``docker save`` by image ID, as ``arv-keepdocker`` does: RepoTags is null in the tar.

    The child gets no credentials (:mod:`keeptar._subprocess`).
    """
    process = subprocess.Popen(
        ["docker", "save", image_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(),
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        try:
            yield ByteSource(process.stdout, f"docker save {image_id}")  # type: ignore[arg-type]
        except ArchiveError:
            _check_docker(process, image_id)
            raise
        _check_docker(process, image_id)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def _check_docker(process: subprocess.Popen[bytes], image: str) -> None:
    assert process.stderr is not None
    status = process.wait()
    if status != 0:
        _docker_failed("save", image, status, process.stderr.read())


def _docker_failed(command: str, image: str, status: int, stderr: bytes) -> None:
    detail = child_message(stderr)
    if "no such image" in detail.lower() or "reference does not exist" in detail.lower():
        raise NotFoundError(f"the local Docker daemon has no image {image!r}")
    raise KeeptarError(f"docker {command} {image} failed (exit {status}): {detail}")


def load_image(
    backend: Backend,
    source: str | None,
    *,
    source_kind: SourceKind | None = None,
    project_uuid: str | None = None,
    tag: str | None = None,
    image: str | None = None,
    name: str | None = None,
    force: bool = False,
    force_image_format: bool = False,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
    input_stream: BinaryIO | None = None,
    resume: bool = False,
) -> LoadResult:
    """Load an image into *backend* and register it; see the module docstring.

    The typed entry points (:mod:`keeptar.api`) are thin over this.

    Args:
        backend: where to store it.
        source: the source argument (see :func:`detect_source`); None with *stream*.
        source_kind: force the kind of source (``--from``).
        project_uuid: owner project (default: the user's home project).
        tag: ``repo[:tag]`` to register instead of the archive's own tags (from
            docker, the image name given, unless it is an image ID: the image is
            saved by ID, as ``arv-keepdocker`` saves it, so the tar has no RepoTags).
        image: which image to load from a multi-image archive (ID prefix or repo:tag).
        name: collection name (default ``Docker image REPO:TAG HASH12``).
        force: create a new collection even if the image is stored already (uploading
            again, except from a collection or arv-mount source: its blocks are reused).
        force_image_format: store an image the cluster's dockerImageFormats refuses.
        progress: called with bytes of input read so far.
        warn: called with a one-line message when the load does something the
            user should know of: an archive RepoTag that is not registered (Docker
            or the API server would refuse it), or an existing collection that is
            not reused because a compute node could not load it; each message once.
        input_stream: a binary stream to read the archive from, once, as standard input
            is read (no seeking); *source* and *source_kind* must then be None.
        resume: on Arvados, record the signed locator of each block stored from a
            regular file in a cache on disk, and let a re-run after a failure or kill
            store only the blocks missing (``arv-put``'s resume; see
            :mod:`keeptar.keep.resume`).  Off by default: no cache on disk.

    Raises:
        KeeptarError: see :mod:`keeptar.errors`; nothing is left registered.
        UsageError: also for a ``--tag`` or ``--name`` that Docker or the API
            server would refuse, before anything is read or stored.
    """
    if input_stream is not None:
        if source is not None or source_kind is not None:
            raise UsageError("give a source or a stream, not both")
        kind, value = SourceKind.STDIN, "-"
    else:
        kind, value = detect_source(source, source_kind)
    docker_id = None
    if kind is SourceKind.DOCKER:
        docker_id = _docker_image_id(value)
        if tag is None and not _is_id_reference(value, docker_id):
            tag = value  # the name comes from the argument, as in arv-keepdocker
    if tag is not None:
        typed = str(parse_image_ref(tag))
        problem = link_name_problem(typed)
        if problem is not None:
            raise naming(UsageError, Parameter("tag"), f" {abbreviate(typed)}: {problem}")
        if not name:  # the default name's length does not hang on the ID
            problem = collection_name_problem(collection_name("0" * 12, typed))
            if problem is not None:
                raise naming(
                    UsageError,
                    Parameter("tag"),
                    f" {abbreviate(typed)}: {problem} (the default name holds the tag; give ",
                    Parameter("name"),
                    ")",
                )
    if name:
        problem = collection_name_problem(name)
        if problem is not None:
            raise naming(UsageError, Parameter("name"), f": {problem}")
    target = _Target(backend, resolve_owner(backend, project_uuid), tag, name, force, _once(warn))
    # Only a file has an identity a re-run can recognise (not stdin, a pipe or docker save).
    target.resume = resume and kind is SourceKind.FILE and input_stream is None

    if kind in (SourceKind.COLLECTION, SourceKind.ARV_MOUNT):
        ref = (
            _CollectionFile(value, "")
            if kind is SourceKind.COLLECTION
            else _mount_file(Path(value))
        )
        if ref is None:
            raise UsageError(f"{value} is not inside an arv-mount collection")
        try:
            return _load_collection_file(
                target, ref, image_ref=image, force_image_format=force_image_format
            )
        except NotFoundError:
            if kind is SourceKind.COLLECTION:
                raise
            kind = SourceKind.FILE  # a mount of another cluster: copy the bytes instead

    if docker_id is not None:
        opened = _docker_save(docker_id)
    else:
        opened = open_source(value if input_stream is None else input_stream)
    with opened as stream:
        if kind is SourceKind.FILE and _is_plain_file(stream):
            return _load_plain_file(
                target,
                stream,
                image_ref=image,
                force_image_format=force_image_format,
                progress=progress,
            )
        return _load_stream(
            target,
            stream,
            image_ref=image,
            force_image_format=force_image_format,
            progress=progress,
        )


def _once(warn: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """*warn*, passing on each distinct message only once."""
    if warn is None:
        return None
    seen: set[str] = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)

    return once


def _identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a file's content changed: device, inode, size, modification and change time."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class _ParsedBytes:
    """Digests of the byte ranges a metadata pass read, to check the stored blocks against.

    The tar reader's result depends only on the bytes it was fed (what it skipped
    it never saw), so if every range it read is the same in the stored blocks, the
    stored file parses to the same images, IDs and tags.  Ranges are cut at Keep
    block boundaries and kept as sha256 digests: memory is a few bytes per range.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._ranges: dict[int, list[tuple[int, int, bytes]]] = {}

    def record(self, offset: int, data: bytes) -> None:
        """Remember that the bytes at *offset* were *data*."""
        view = memoryview(data)
        while len(view):
            block, within = divmod(offset, BLOCK_SIZE)
            count = min(len(view), BLOCK_SIZE - within)
            digest = hashlib.sha256(view[:count]).digest()
            self._ranges.setdefault(block * BLOCK_SIZE, []).append((within, count, digest))
            offset += count
            view = view[count:]

    def check(self, offset: int, block: memoryview) -> None:
        """Check the block stored at *offset* against what was read there.

        Raises:
            ArchiveError: a range differs: the file was rewritten during the load.
        """
        for within, count, digest in self._ranges.get(offset, ()):
            if hashlib.sha256(block[within : within + count]).digest() != digest:
                raise ArchiveError(
                    f"{self._name} changed while it was being loaded (byte {offset + within} "
                    "on differs from what was read); load it again"
                )


def _is_stream(path: str) -> bool:
    """Whether *path* is a named pipe or a socket (read once, as standard input is)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _is_plain_file(source: ByteSource) -> bool:
    """Whether *source* is a regular file that starts like an uncompressed archive."""
    if not source.seekable or source.fd is None:
        return False
    return detect_compression(os.pread(source.fd, MAGIC_LENGTH, 0)) is Compression.NONE
