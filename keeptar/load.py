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
Nothing is registered until every block is stored, and a failure while
registering removes what was created, so a failed load leaves no collection
and no links; loading again is always safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeptar._source_kind import SourceKind
from keeptar.archive import find_image_file, inspect_source
from keeptar.backends import Backend, Record
from keeptar.catalog.images import HASH_LINK, REPO_TAG_LINK, ensure_link, find_image_collections
from keeptar.catalog.references import familiar_name, parse_image_ref
from keeptar.errors import (
    ArchiveError,
    ConflictError,
    KeeptarError,
    NotFoundError,
    UsageError,
)
from keeptar.formats import ArchiveScanner, ImageInfo, read_images
from keeptar.keep.blocks import BlockWriter, KeepFileReader, StoredStream, store_file
from keeptar.keep.manifest import (
    is_collection_ref,
    is_portable_data_hash,
    manifest_from_segments,
    parse_manifest,
    single_file_manifest,
)
from keeptar.streaming.decompress import MAGIC_LENGTH, Compression, detect_compression
from keeptar.streaming.sources import ByteSource, open_source, run_tar_stream

__all__ = ["LoadResult", "SourceKind", "detect_source", "load_image"]

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
    path when it lies inside a mounted collection; a PDH or collection UUID is
    a collection.  Anything else is an error, never a guess: ``--from docker``
    is needed to save an image from the local daemon.

    Raises:
        UsageError: the argument is missing, ambiguous or unknown.
    """
    if stdin_is_tty is None:
        stdin_is_tty = sys.stdin.isatty()
    if forced is not None:
        if forced is SourceKind.STDIN:
            if argument not in (None, "-"):
                raise UsageError("--from stdin takes no source argument (or -)")
            return forced, "-"
        if not argument or argument == "-":
            raise UsageError(f"--from {forced.value} needs a source argument")
        if forced in (SourceKind.FILE, SourceKind.ARV_MOUNT) and not Path(argument).is_file():
            raise UsageError(f"{argument}: no such file")
        if forced is SourceKind.COLLECTION and not is_collection_ref(argument):
            raise UsageError(f"{argument!r} is not a collection PDH or UUID")
        return forced, argument
    if argument is None or argument == "-":
        if argument is None and stdin_is_tty:
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
    if is_collection_ref(argument):
        return SourceKind.COLLECTION, argument
    raise UsageError(
        f"{argument!r} is not a file, a collection PDH or a collection UUID "
        "(to save an image from the local Docker daemon, use --from docker)"
    )


# ---- choosing and checking the image ---------------------------------------------------


def _choose_image(images: Sequence[ImageInfo], wanted: str | None) -> ImageInfo:
    if wanted is None:
        if len(images) == 1:
            return images[0]
        listing = ", ".join(
            f"{image.id} ({', '.join(image.repo_tags) or 'untagged'})" for image in images
        )
        raise UsageError(
            f"the archive holds {len(images)} images; choose one with --image: {listing}"
        )
    bare = wanted.removeprefix("sha256:")
    by_id = [i for i in images if bare and i.id.removeprefix("sha256:").startswith(bare)]
    if len(by_id) == 1:
        return by_id[0]
    try:
        ref = str(parse_image_ref(wanted))
    except UsageError:
        ref = wanted
    by_tag = [i for i in images if ref in _repo_tags(i, None)]
    if len(by_tag) == 1:
        return by_tag[0]
    ids = ", ".join(i.id for i in images)
    raise UsageError(f"--image {wanted!r} matches {len(by_id) or len(by_tag)} of the images: {ids}")


def _check_format(backend: Backend, image: ImageInfo, force: bool) -> None:
    """Refuse an image whose format the server's dockerImageFormats does not accept."""
    formats = backend.server_facts().docker_image_formats
    needed = "v1" if image.format.is_v1 else "v2"
    if needed in formats or force:
        return
    accepted = ", ".join(formats) or "none"
    hint = (
        "convert it with `keeptar migrate19`, or pass --force-image-format"
        if needed == "v1"
        else "pass --force-image-format to store it anyway"
    )
    raise ConflictError(
        f"image {image.id} is a Docker {needed} image, but this cluster accepts "
        f"{accepted} (dockerImageFormats); {hint}"
    )


def _repo_tags(image: ImageInfo, tag: str | None) -> list[str]:
    if tag is not None:
        return [str(parse_image_ref(tag))]
    tags: list[str] = []
    for raw in image.repo_tags:
        try:
            ref = str(parse_image_ref(familiar_name(raw)))
        except UsageError:
            continue  # names Docker itself would refuse (upper case…) are not registered
        if ref not in tags:
            tags.append(ref)
    return tags


def collection_name(image_id: str, repo_tag: str | None) -> str:
    """The default collection name, as ``arv-keepdocker`` makes it."""
    if repo_tag:
        return f"Docker image {repo_tag.replace('/', ' ')} {image_id[:12]}"
    return f"Docker image {image_id[:12]}"


# ---- the plan every source ends in ------------------------------------------------------


@dataclass(slots=True)
class _Target:
    backend: Backend
    owner_uuid: str
    tag: str | None
    name: str | None
    force: bool


def _resolve_owner(backend: Backend, project_uuid: str | None) -> str:
    if project_uuid is None:
        return backend.current_user().uuid
    try:
        project = backend.get_project(project_uuid)
    except NotFoundError:
        raise NotFoundError(f"project {project_uuid} not found (or not readable)") from None
    if not project.get("can_write"):
        raise ConflictError(f"you cannot write to project {project_uuid}")
    uuid: str = project["uuid"]
    return uuid


def _reuse_existing(target: _Target, image: ImageInfo) -> LoadResult | None:
    """Register *image* from a collection that already holds it, if there is one."""
    candidates = find_image_collections(
        target.backend,
        image.id,
        select=["uuid", "owner_uuid", "name", "manifest_text", "portable_data_hash"],
    )
    owned = [c for c in candidates if c["owner_uuid"] == target.owner_uuid]
    for candidate in owned + [c for c in candidates if c not in owned]:
        if not _blocks_stored(target.backend, candidate["manifest_text"]):
            continue  # damaged: upload again, which restores its blocks too
        if candidate in owned:
            return _register(target, image, existing=candidate, reused=True)
        return _register(target, image, manifest_text=candidate["manifest_text"], reused=True)
    return None


def _blocks_stored(backend: Backend, manifest_text: str) -> bool:
    """Whether every block *manifest_text* names is stored (so reusing it is safe)."""
    return all(
        backend.has_block(segment.locator)
        for item in parse_manifest(manifest_text)
        for segment in item.segments
    )


def _register(
    target: _Target,
    image: ImageInfo,
    *,
    manifest_text: str | None = None,
    existing: Record | None = None,
    reused: bool = False,
) -> LoadResult:
    """Create the collection (unless *existing*) and the links; undo all of it on failure."""
    backend = target.backend
    tags = _repo_tags(image, target.tag)
    primary = tags[0] if tags else None
    properties: dict[str, Any] = {}
    if image.created is not None:
        properties["image_timestamp"] = image.created
    created_links: list[str] = []
    created_collection: str | None = None
    try:
        if existing is None:
            assert manifest_text is not None
            existing = backend.create_collection(
                manifest_text=manifest_text,
                name=target.name or collection_name(image.id, primary),
                owner_uuid=target.owner_uuid,
                properties={"docker-image-repo-tag": primary},
                ensure_unique_name=True,
            )
            created_collection = existing["uuid"]
        for link_class, link_name in [(HASH_LINK, image.id)] + [(REPO_TAG_LINK, t) for t in tags]:
            link = ensure_link(
                backend,
                link_class=link_class,
                name=link_name,
                head_uuid=existing["uuid"],
                owner_uuid=target.owner_uuid,
                properties=properties,
            )
            if link is not None:
                created_links.append(link["uuid"])
    except BaseException:
        _rollback(backend, created_links, created_collection)
        raise
    pdh = (
        existing.get("portable_data_hash")
        or backend.get_collection(existing["uuid"])["portable_data_hash"]
    )
    return LoadResult(
        uuid=existing["uuid"],
        portable_data_hash=pdh,
        image_id=image.id,
        repo_tag=primary,
        file_name=image.file_name,
        format=image.format.value,
        created=image.created,
        reused=reused,
    )


def _rollback(backend: Backend, links: Sequence[str], collection: str | None) -> None:
    """Best-effort removal of what a failed registration created."""
    for uuid in reversed(links):
        with contextlib.suppress(Exception):
            backend.delete_link(uuid)
    if collection is not None:
        with contextlib.suppress(Exception):
            backend.delete_collection(collection)


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
    with BlockWriter(backend.put_block, detach=not backend.stores_in_place) as writer:
        run_tar_stream(source, scanner, tap=writer.write, progress=progress)
        _, images = read_images(scanner.scan)
        image = _choose_image(images, image_ref)
        _check_format(backend, image, force_image_format)
        stored = writer.finish()
    return _register_stored(target, image, stored)


def _register_stored(target: _Target, image: ImageInfo, stored: StoredStream) -> LoadResult:
    """Register freshly stored bytes as *image*.

    Unless ``--force``, look for the image once more first: another load may have
    registered it while these bytes were uploading, and the stored blocks are the
    same either way (content-addressed), so reuse beats a duplicate collection.
    """
    if not target.force:
        found = _reuse_existing(target, image)
        if found is not None:
            return found
    manifest = single_file_manifest(image.file_name, stored.locators, stored.size)
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
    image = _choose_image(inspect_source(source).images, image_ref)
    _check_format(backend, image, force_image_format)
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
    )
    if _identity(os.fstat(source.fd)) != _identity(status):
        raise ArchiveError(f"{source.name} changed while it was being loaded; load it again")
    return _register_stored(target, image, stored)


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
    info = inspect_source(ByteSource(reader, reader.name))  # type: ignore[arg-type]
    image = _choose_image(info.images, image_ref)
    _check_format(backend, image, force_image_format)
    if not target.force:
        found = _reuse_existing(target, image)
        if found is not None:
            return found
    files = parse_manifest(record["manifest_text"])
    if (
        record.get("owner_uuid") == target.owner_uuid
        and len(files) == 1
        and files[0].path == image.file_name
        and "uuid" in record
        and not is_portable_data_hash(record["uuid"])
    ):
        return _register(target, image, existing=record, reused=True)
    manifest = manifest_from_segments(image.file_name, item.segments)
    return _register(target, image, manifest_text=manifest, reused=True)


@contextlib.contextmanager
def _docker_save(image: str) -> Iterator[ByteSource]:
    if shutil.which("docker") is None:
        raise UsageError("--from docker needs the docker command and a running Docker daemon")
    process = subprocess.Popen(
        ["docker", "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        try:
            yield ByteSource(process.stdout, f"docker save {image}")  # type: ignore[arg-type]
        except ArchiveError:
            _check_docker(process, image)
            raise
        _check_docker(process, image)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def _check_docker(process: subprocess.Popen[bytes], image: str) -> None:
    assert process.stderr is not None
    status = process.wait()
    if status == 0:
        return
    detail = " ".join(process.stderr.read().decode(errors="replace").split())[:300]
    if "no such image" in detail.lower() or "reference does not exist" in detail.lower():
        raise NotFoundError(f"the local Docker daemon has no image {image!r}")
    raise KeeptarError(f"docker save {image} failed (exit {status}): {detail}")


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
) -> LoadResult:
    """Load an image into *backend* and register it; see the module docstring.

    Args:
        backend: where to store it.
        source: the source argument (see :func:`detect_source`).
        source_kind: force the kind of source (``--from``).
        project_uuid: owner project (default: the user's home project).
        tag: ``repo[:tag]`` to register instead of the archive's own tags.
        image: which image to load from a multi-image archive (ID prefix or repo:tag).
        name: collection name (default ``Docker image REPO:TAG HASH12``).
        force: upload and create a new collection even if the image is stored already.
        force_image_format: store an image the cluster's dockerImageFormats refuses.
        progress: called with bytes of input read so far.

    Raises:
        KeeptarError: see :mod:`keeptar.errors`; nothing is left registered.
    """
    kind, value = detect_source(source, source_kind)
    if tag is not None:
        parse_image_ref(tag)
    target = _Target(backend, _resolve_owner(backend, project_uuid), tag, name, force)

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

    opened = _docker_save(value) if kind is SourceKind.DOCKER else open_source(value)
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


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file's content changed: device, inode, size, modification time."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _is_plain_file(source: ByteSource) -> bool:
    """Whether *source* is a regular file that starts like an uncompressed archive."""
    if not source.seekable or source.fd is None:
        return False
    return detect_compression(os.pread(source.fd, MAGIC_LENGTH, 0)) is Compression.NONE
