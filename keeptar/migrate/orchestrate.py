"""``keeptar migrate19``: every Docker <= 1.9 (v1) image of a cluster, migrated to v2.

As ``arv-migrate-docker19`` did (Arvados SDK <= 2.7.4):

* old images are the listed images whose hash lacks ``sha256:`` (``<unknown>``
  too), one per PDH, less those whose PDH is the ``tail_uuid`` of a
  ``docker_image_migration`` / ``migrate_1.9_1.10`` link;
* each is converted (by the native engine, zero-copy, or by Docker's own
  conversion in the ``docker/migrate19`` container), registered in the old
  image's project under its old names and ``image_timestamp``, and then linked
  from old PDH to new PDH by a link the system user owns, which the API server
  follows when a v2-only cluster is asked to run the old name.

Both engines are deterministic (one v1 archive always gives the same v2 PDH),
registration converges (:mod:`keeptar.catalog.registration`), and the migration
link is looked up before it is made and de-duplicated after, so a re-run after
a kill finishes the work, and two runs at once leave one of each.

This module reports through callbacks and never prints.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from keeptar.backends import Backend, Record
from keeptar.catalog.images import HASH_LINK, REPO_TAG_LINK, list_images, sort_links
from keeptar.catalog.registration import ImageRegistration, ensure_link, register_image
from keeptar.errors import ArchiveError, KeeptarError, UsageError
from keeptar.keep.manifest import ManifestFile, parse_manifest

__all__ = [
    "MIGRATION_LINK_CLASS",
    "MIGRATION_LINK_NAME",
    "Engine",
    "ImageOutcome",
    "MigrationPlan",
    "OldImage",
    "ensure_migration_link",
    "find_unmigrated",
    "migrate_image",
    "migrate_images",
    "require_admin",
    "system_user_uuid",
]

MIGRATION_LINK_CLASS = "docker_image_migration"
MIGRATION_LINK_NAME = "migrate_1.9_1.10"

EngineName = Literal["docker", "native"]


class Engine(Protocol):
    """What converts: ``None`` means the native engine (see :func:`migrate_image`)."""

    def convert(self, source: Any, name: str = ...) -> Any:  # pragma: no cover - protocol
        """Yield the v2 archive of *source* as a ByteSource (a context manager)."""
        ...


@dataclass(frozen=True, slots=True)
class OldImage:
    """One v1 image to migrate (one per PDH).

    Attributes:
        pdh: the old collection's portable data hash.
        collection: the old collection's UUID (the most preferred one with this PDH).
        owner_uuid: its project: the new image is registered there.
        image_id: the old image hash (64 hex digits, or ``<unknown>``).
        repo_tags: its ``repo:tag`` names, the most preferred first.
        image_timestamp: the old hash link's ``image_timestamp``.
        size: size of its image file (0 if it holds none).
        manifest_text: the old collection's manifest.
    """

    pdh: str
    collection: str
    owner_uuid: str
    image_id: str
    repo_tags: tuple[str, ...]
    image_timestamp: str | None
    size: int
    manifest_text: str = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON form of the old image."""
        return {
            "pdh": self.pdh,
            "collection": self.collection,
            "owner_uuid": self.owner_uuid,
            "image_id": self.image_id,
            "repo_tags": list(self.repo_tags),
            "size": self.size,
        }


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """What :func:`find_unmigrated` found.

    Attributes:
        images: the images still to migrate, most preferred first.
        already_migrated: how many old PDHs have a migration link.
    """

    images: tuple[OldImage, ...]
    already_migrated: int

    @property
    def total_bytes(self) -> int:
        """Sum of the image files' sizes."""
        return sum(image.size for image in self.images)

    @property
    def largest(self) -> OldImage | None:
        """The biggest image (the free-space check's measure)."""
        return max(self.images, key=lambda image: image.size, default=None)


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    """What happened to one old image.

    Attributes:
        index: 1-based position in the run.
        old: the old image.
        error: the one-line error, if it failed.
        image_id: the v2 image ID.
        pdh: the v2 collection's PDH.
        collection: the v2 collection's UUID.
        link: the migration link's UUID.
        reused: the v2 image was registered already (an earlier or concurrent run).
    """

    index: int
    old: OldImage
    error: str | None = None
    image_id: str | None = None
    pdh: str | None = None
    collection: str | None = None
    link: str | None = None
    reused: bool = False

    @property
    def ok(self) -> bool:
        """Whether the image was migrated."""
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """One ``--json`` line."""
        return {
            "index": self.index,
            "old_pdh": self.old.pdh,
            "old_collection": self.old.collection,
            "old_image_id": self.old.image_id,
            "repo_tags": list(self.old.repo_tags),
            "ok": self.ok,
            "error": self.error,
            "image_id": self.image_id,
            "pdh": self.pdh,
            "collection": self.collection,
            "link": self.link,
            "reused": self.reused,
        }


def require_admin(backend: Backend) -> None:
    """Refuse a non-admin user, as the original tool did.

    Raises:
        UsageError: the token is not an admin's.
    """
    if not backend.current_user().is_admin:
        raise UsageError("migrate19 requires an admin token")


def system_user_uuid(backend: Backend) -> str:
    """The cluster's system user, ``<prefix>-tpzed-000000000000000``."""
    return f"{backend.server_facts().uuid_prefix}-tpzed-000000000000000"


def _image_file(manifest_text: str) -> ManifestFile | None:
    tars = [
        item
        for item in parse_manifest(manifest_text)
        if "/" not in item.path and item.path.endswith(".tar")
    ]
    return tars[0] if len(tars) == 1 else None


def find_unmigrated(backend: Backend, only: Iterable[str] | None = None) -> MigrationPlan:
    """The v1 images not migrated yet, one per PDH (only those in *only*, if given)."""
    wanted = None if only is None else set(only)
    rows = [
        row
        for row in list_images(backend, include_untagged=True)
        if not row.image_id.startswith("sha256:")
    ]
    migrated = {
        link["tail_uuid"]
        for link in backend.list_links(
            [["link_class", "=", MIGRATION_LINK_CLASS], ["name", "=", MIGRATION_LINK_NAME]]
        )
        if link.get("tail_uuid")
    }
    uuids = sorted({row.collection for row in rows})
    records: dict[str, Record] = {}
    if uuids:
        records = {
            record["uuid"]: record
            for record in backend.list_collections(
                [["uuid", "in", uuids]],
                select=["uuid", "portable_data_hash", "manifest_text", "owner_uuid"],
            )
        }
    chosen: dict[str, str] = {}  # pdh -> collection uuid, in preference order
    for row in rows:
        record = records.get(row.collection)
        if record is None:
            continue
        pdh = record["portable_data_hash"]
        if pdh in migrated or (wanted is not None and pdh not in wanted):
            continue
        chosen.setdefault(pdh, row.collection)
    hash_links = _links_by_head(backend, HASH_LINK, list(chosen.values()))
    unhashed = [uuid for uuid in chosen.values() if uuid not in hash_links]
    name_links = _links_by_head(backend, REPO_TAG_LINK, unhashed)
    images = []
    for pdh, uuid in chosen.items():
        record = records[uuid]
        names = [
            f"{row.repo}:{row.tag}"
            for row in rows
            if row.collection == uuid and row.repo != "<none>" and row.tag != "<none>"
        ]
        hashes = hash_links.get(uuid, [])
        # The hash link's image_timestamp; with none (an <unknown> image), a name link's.
        stamped = hashes or name_links.get(uuid, [])
        stamp = (stamped[0].get("properties") or {}).get("image_timestamp") if stamped else None
        item = _image_file(record.get("manifest_text") or "")
        images.append(
            OldImage(
                pdh=pdh,
                collection=uuid,
                owner_uuid=record["owner_uuid"],
                image_id=hashes[0]["name"] if hashes else "<unknown>",
                repo_tags=tuple(dict.fromkeys(names)),
                image_timestamp=stamp if isinstance(stamp, str) else None,
                size=item.size if item is not None else 0,
                manifest_text=record.get("manifest_text") or "",
            )
        )
    present = {record["portable_data_hash"] for record in records.values()}
    return MigrationPlan(tuple(images), len(migrated & present))


def _links_by_head(backend: Backend, link_class: str, heads: list[str]) -> dict[str, list[Record]]:
    """The *link_class* links of each of *heads*, most preferred first: one listing for all."""
    if not heads:
        return {}
    links = backend.list_links([["link_class", "=", link_class], ["head_uuid", "in", heads]])
    grouped: dict[str, list[Record]] = {}
    for link in sort_links(links):
        grouped.setdefault(link["head_uuid"], []).append(link)
    return grouped


def ensure_migration_link(backend: Backend, old_pdh: str, new_pdh: str) -> Record:
    """The migration link old PDH -> new PDH owned by the system user, made only if missing.

    Made through :func:`keeptar.catalog.registration.ensure_link`, as registration
    makes every link (the oldest of concurrent duplicates wins).
    """
    return ensure_link(
        backend,
        link_class=MIGRATION_LINK_CLASS,
        name=MIGRATION_LINK_NAME,
        head_uuid=new_pdh,
        tail_uuid=old_pdh,
        owner_uuid=system_user_uuid(backend),
    )


def _native_manifest(backend: Backend, old: OldImage, item: ManifestFile) -> tuple[str, str, str]:
    """Convert in place: ``(image_id, file_name, manifest_text)`` of the zero-copy v2 file."""
    from keeptar.catalog.loadable import rewrite_manifest
    from keeptar.keep.blocks import KeepFileReader
    from keeptar.migrate import plan_conversion
    from keeptar.streaming.decompress import Compression
    from keeptar.streaming.sources import ByteSource

    name = f"{old.pdh}/{item.path}"
    reader = KeepFileReader(backend.get_block, item, name=name)
    conversion = plan_conversion(ByteSource(reader, name))  # type: ignore[arg-type]
    if conversion.compression is not Compression.NONE:
        raise ArchiveError(f"{name} is {conversion.compression.value}-compressed, not a plain tar")
    if len(conversion.images) != 1:
        raise ArchiveError(f"{name} holds {len(conversion.images)} images, not one")
    image = conversion.images[0]
    file_name = f"{image.id}.tar"  # as arv-keepdocker names a v2 image's file
    manifest = rewrite_manifest(backend, item.segments, conversion.rewrite, file_name)
    return image.id, file_name, manifest


def _docker_manifest(
    backend: Backend, old: OldImage, item: ManifestFile, engine: Engine
) -> tuple[str, str, str]:
    """Convert in the container, storing its output: ``(image_id, file_name, manifest_text)``."""
    from keeptar.formats import ArchiveScanner, read_images
    from keeptar.keep.blocks import BlockWriter, KeepFileReader
    from keeptar.keep.manifest import single_file_manifest
    from keeptar.streaming.sources import ByteSource, run_tar_stream

    name = f"{old.pdh}/{item.path}"
    reader = KeepFileReader(backend.get_block, item, name=name)
    scanner = ArchiveScanner()
    with (
        engine.convert(ByteSource(reader, name), name) as source,  # type: ignore[arg-type]
        BlockWriter(backend.put_block, detach=not backend.stores_in_place) as writer,
    ):
        run_tar_stream(source, scanner, tap=writer.write)
        stored = writer.finish()
    # Only now, the container's outcome checked, is anything registered.
    _, images = read_images(scanner.scan)
    if len(images) != 1:
        raise ArchiveError(f"the docker engine made {len(images)} images of {name}, not one")
    image = images[0]
    return (
        image.id,
        image.file_name,
        single_file_manifest(image.file_name, stored.locators, stored.size),
    )


def migrate_image(
    backend: Backend, old: OldImage, *, engine: Engine | None = None, index: int = 0
) -> ImageOutcome:
    """Convert, register and link one old image; an error is returned, not raised.

    Args:
        backend: the cluster (an admin's handle).
        old: the image (from :func:`find_unmigrated`).
        engine: a :class:`~keeptar.migrate.container.ContainerEngine`, or None for native.
        index: its place in the run, for the outcome.
    """
    try:
        item = _image_file(old.manifest_text)
        if item is None:
            raise ArchiveError(f"collection {old.collection} does not hold exactly one .tar file")
        if engine is None:
            image_id, file_name, manifest = _native_manifest(backend, old, item)
        else:
            image_id, file_name, manifest = _docker_manifest(backend, old, item, engine)
        request = ImageRegistration(
            image_id=image_id,
            file_name=file_name,
            owner_uuid=old.owner_uuid,
            repo_tags=old.repo_tags,
            image_timestamp=old.image_timestamp,
        )
        registered = register_image(backend, request, manifest_text=manifest)
        link = ensure_migration_link(backend, old.pdh, registered.portable_data_hash)
    except KeeptarError as exc:
        return ImageOutcome(index, old, error=str(exc))
    return ImageOutcome(
        index,
        old,
        image_id=image_id,
        pdh=registered.portable_data_hash,
        collection=registered.uuid,
        link=link["uuid"],
        reused=registered.reused,
    )


def migrate_images(
    backend: Backend,
    images: Sequence[OldImage],
    *,
    engine: Engine | None = None,
    jobs: int = 1,
    on_start: Callable[[int, OldImage], None] | None = None,
    on_done: Callable[[ImageOutcome], None] | None = None,
) -> list[ImageOutcome]:
    """Migrate *images*, *jobs* at a time; a failed image does not stop the others.

    Each worker thread uses a handle of its own (:meth:`Backend.reopen`).
    *on_start* and *on_done* are called (from worker threads, one at a time)
    as each image starts and ends.
    """
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    lock = threading.Lock()
    local = threading.local()

    def handle() -> Backend:
        if jobs == 1:
            return backend
        if getattr(local, "backend", None) is None:
            local.backend = backend.reopen()
        mine: Backend = local.backend
        return mine

    def one(position: int, old: OldImage) -> ImageOutcome:
        if on_start is not None:
            with lock:
                on_start(position, old)
        outcome = migrate_image(handle(), old, engine=engine, index=position)
        if on_done is not None:
            with lock:
                on_done(outcome)
        return outcome

    if jobs == 1:
        return [one(position, old) for position, old in enumerate(images, 1)]
    with ThreadPoolExecutor(max_workers=min(jobs, len(images) or 1)) as pool:
        futures = [pool.submit(one, position, old) for position, old in enumerate(images, 1)]
        return [future.result() for future in futures]
