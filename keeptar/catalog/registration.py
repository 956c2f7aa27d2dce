"""Registering an image in a project: the one place that decides names, links, owner and reuse.

An image is registered as ``arv-keepdocker`` 3.2.1 registers it: a collection
holding the single file ``<image id>.tar``, named ``Docker image REPO TAG
HASH12`` (or as given), with the property ``docker-image-repo-tag``, plus a
``docker_image_hash`` link named with the image ID and one
``docker_image_repo+tag`` link per name, all owned by the target project and
carrying ``properties.image_timestamp``.

Registration is never doubled and never half-done:

- **Embedded store.** The look-up and the creation of the collection and of
  every link run inside :meth:`Backend.atomic`, one SQLite ``BEGIN IMMEDIATE``
  transaction: other processes see all of it or nothing, and concurrent loads
  take turns.
- **Arvados.** No transaction spans API calls, so the steps converge instead:

  1. an image already registered (a ``docker_image_hash`` link to a readable
     collection whose blocks are all stored) is reused, or copied by manifest
     into the project;
  2. otherwise a collection in the project with the same PDH (so the same
     ``<image id>.tar``), even one whose links are missing, is adopted;
  3. otherwise the collection is created under its deterministic name
     *without* ``ensure_unique_name``, so the server's unique
     ``(owner_uuid, name)`` index turns a race into a conflict, and the loser
     adopts the winner's collection (a name taken by some other collection
     falls back to ``ensure_unique_name``);
  4. each link is created only if missing, then looked up again: where
     concurrent runs made identical links, every run keeps the oldest and
     deletes its own extra.

- **Rollback.** A failure or Ctrl-C while registering removes what this run
  created, through a fresh connection (:meth:`Backend.reopen`), except a
  collection another run has meanwhile adopted.  Whatever cannot be removed is
  named in the error; the next run adopts it.
- **arv-keepdocker's lock.** When ``~/.cache/arvados/docker/<image id>.tar.lock``
  exists on this host, registration on Arvados holds its ``flock``, so keeptar
  and ``arv-keepdocker`` never race each other there.

``force`` (``keeptar load --force``) registers a new collection even if the
image is stored already, as ``arv-keepdocker -f`` does: it is created with
``ensure_unique_name`` (a clashing name gets the server's `` (<uuid tail>)``
suffix) and never adopts; its links are still created only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keeptar.backends import Backend, Record
from keeptar.catalog.images import HASH_LINK, REPO_TAG_LINK, find_image_collections, sort_links
from keeptar.errors import BackendError, ConflictError, KeeptarError, NotFoundError
from keeptar.keep.manifest import parse_manifest, portable_data_hash

__all__ = [
    "Accept",
    "ImageRegistration",
    "Registered",
    "collection_name",
    "ensure_link",
    "find_reusable",
    "register_image",
    "register_links",
    "resolve_owner",
    "reuse_image",
]

_REPO_TAG_PROPERTY = "docker-image-repo-tag"


def collection_name(image_id: str, repo_tag: str | None) -> str:
    """The default collection name, as ``arv-keepdocker`` makes it."""
    if repo_tag:
        return f"Docker image {repo_tag.replace('/', ' ')} {image_id[:12]}"
    return f"Docker image {image_id[:12]}"


def resolve_owner(backend: Backend, project_uuid: str | None) -> str:
    """The UUID that will own the registration: *project_uuid*, else the user's home.

    Raises:
        UsageError: *project_uuid* is not a project or user UUID.
        NotFoundError: no such project is visible.
        ConflictError: the project is not writable.
    """
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


@dataclass(frozen=True, slots=True)
class ImageRegistration:
    """What to register, and where.

    Attributes:
        image_id: the image ID (``sha256:…``, or 64 hex digits for Docker v1).
        file_name: the collection's single file, ``<image_id>.tar``.
        owner_uuid: the project (or user home) that owns everything.
        repo_tags: names to register, the primary first; may be empty.
        image_timestamp: the config's ``created``, for the links' properties.
        name: the collection name; default :func:`collection_name`.
    """

    image_id: str
    file_name: str
    owner_uuid: str
    repo_tags: tuple[str, ...] = ()
    image_timestamp: str | None = None
    name: str | None = None

    @property
    def primary_tag(self) -> str | None:
        """The name the collection is named after and its property holds."""
        return self.repo_tags[0] if self.repo_tags else None

    @property
    def collection_name(self) -> str:
        """The collection's name: as given, else ``arv-keepdocker``'s."""
        return self.name or collection_name(self.image_id, self.primary_tag)

    @property
    def collection_properties(self) -> dict[str, Any]:
        """The collection's properties, as ``arv-keepdocker`` sets them."""
        return {_REPO_TAG_PROPERTY: self.primary_tag}


@dataclass(frozen=True, slots=True)
class Registered:
    """The outcome of :func:`register_image`.

    Attributes:
        collection: the image collection (at least ``uuid`` and ``portable_data_hash``).
        reused: the image was registered from a collection that already held it,
            not from the bytes this run stored.
        copied_from: when *reused*, the collection whose manifest is registered.
        created: UUIDs this run created (collection and links).
    """

    collection: Record
    reused: bool = False
    copied_from: Record | None = None
    created: tuple[str, ...] = field(default=())

    @property
    def uuid(self) -> str:
        """The collection UUID."""
        uuid: str = self.collection["uuid"]
        return uuid

    @property
    def portable_data_hash(self) -> str:
        """The collection's PDH."""
        pdh: str = self.collection["portable_data_hash"]
        return pdh


@dataclass(slots=True)
class _Made:
    """Something this run asked the store to create.

    *uuid* is None until the answer arrives: after Ctrl-C or a lost answer the
    object may exist anyway, so *filters* find it, minus the *before* UUIDs that
    matched them already before the request was sent.
    """

    kind: str  # "collection" or "link"
    filters: list[list[Any]]
    before: frozenset[str]
    uuid: str | None = None


#: Decides whether a stored collection (with ``manifest_text``) may be reused.
Accept = Callable[[Record], bool]


def find_reusable(
    backend: Backend, image_id: str, owner_uuid: str, accept: Accept | None = None
) -> tuple[Record, Record] | None:
    """A readable collection registered as *image_id* whose blocks are all stored.

    With *accept*, only collections it accepts (for example: ones a compute node
    can load) are considered.

    One owned by *owner_uuid* comes first, then the rest in the server's
    preference order.  Returns the collection (with ``manifest_text``) and its
    best ``docker_image_hash`` link, or None.
    """
    candidates = find_image_collections(
        backend,
        image_id,
        select=["uuid", "owner_uuid", "name", "manifest_text", "portable_data_hash"],
    )
    owned = [c for c in candidates if c["owner_uuid"] == owner_uuid]
    for candidate in owned + [c for c in candidates if c not in owned]:
        if not _blocks_stored(backend, candidate["manifest_text"]):
            continue  # damaged: upload again, which restores its blocks too
        if accept is not None and not accept(candidate):
            continue
        links = sort_links(
            backend.list_links(
                [
                    ["link_class", "=", HASH_LINK],
                    ["name", "=", image_id],
                    ["head_uuid", "=", candidate["uuid"]],
                ]
            )
        )
        return candidate, (links[0] if links else {})
    return None


def _blocks_stored(backend: Backend, manifest_text: str) -> bool:
    """Whether every block *manifest_text* names is stored (so reusing it is safe)."""
    return all(
        backend.has_block(segment.locator)
        for item in parse_manifest(manifest_text)
        for segment in item.segments
    )


def _holds_only(record: Mapping[str, Any], file_name: str) -> bool:
    files = parse_manifest(record.get("manifest_text") or "")
    return len(files) == 1 and files[0].path == file_name


def register_image(
    backend: Backend,
    request: ImageRegistration,
    *,
    manifest_text: str | None = None,
    existing: Record | None = None,
    force: bool = False,
    accept: Accept | None = None,
) -> Registered:
    """Register an image in ``request.owner_uuid``; see the module docstring.

    Args:
        backend: where.
        request: what to register.
        manifest_text: a manifest holding just ``request.file_name`` (bytes this run
            stored, or blocks of another collection); the collection is made from it
            unless the image is registered already.
        existing: a collection of the owner's that holds just the image file, to
            register in place (a collection source).
        force: make a new collection even if the image is registered already.
        accept: which registered copies may be reused (see :func:`find_reusable`).

    Raises:
        KeeptarError: nothing this run created is left behind, or the error names
            what could not be removed.
    """
    if manifest_text is None and existing is None:
        raise ValueError("register_image needs manifest_text or existing")
    registered = _run(backend, request, manifest_text, existing, force, accept)
    assert registered is not None
    return registered


def reuse_image(
    backend: Backend, request: ImageRegistration, *, accept: Accept | None = None
) -> Registered | None:
    """Register the image from a stored copy if it is registered already, else None.

    The cheap path before any upload: the same steps as :func:`register_image`,
    but with no bytes of its own it creates nothing when no copy is found.
    """
    return _run(backend, request, None, None, False, accept)


def _run(
    backend: Backend,
    request: ImageRegistration,
    manifest_text: str | None,
    existing: Record | None,
    force: bool,
    accept: Accept | None,
) -> Registered | None:
    with (
        _rolled_back_on_failure(backend) as created,
        _keepdocker_lock(backend, request.image_id),
        backend.atomic(),
    ):
        return _register(backend, request, manifest_text, existing, force, accept, created)


@contextlib.contextmanager
def _rolled_back_on_failure(backend: Backend) -> Iterator[list[_Made]]:
    """Yield the list of what the block creates; on any exception, undo it.

    Whatever cannot be undone is named in a BackendError raised from the exception.
    """
    created: list[_Made] = []
    try:
        yield created
    except BaseException as exc:
        leftovers = _rollback(backend, created)
        if leftovers:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            raise BackendError(
                f"{what}; could not remove what this load had registered: "
                f"{', '.join(leftovers)} (loading again completes and keeps it)"
            ) from exc
        raise


def register_links(
    backend: Backend,
    collection: Record,
    owner_uuid: str,
    links: Sequence[tuple[str, str]],
    *,
    image_timestamp: str | None = None,
) -> Registered:
    """Make sure *collection* has each ``(link_class, name)`` link owned by *owner_uuid*.

    Each link is created only if missing, with ``properties.image_timestamp``
    when given, by the same steps as :func:`register_image` (one transaction on
    the embedded store, convergent on Arvados, rolled back on failure).
    """
    properties: dict[str, Any] = {}
    if image_timestamp is not None:
        properties["image_timestamp"] = image_timestamp
    with _rolled_back_on_failure(backend) as created, backend.atomic():
        _ensure_links(backend, collection["uuid"], owner_uuid, links, properties, created)
    return Registered(
        collection=collection,
        reused=True,
        created=tuple(made.uuid for made in created if made.uuid),
    )


def ensure_link(
    backend: Backend,
    *,
    link_class: str,
    name: str,
    head_uuid: str,
    owner_uuid: str,
    tail_uuid: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Record:
    """One link (class, name, head, owner, tail), made only if missing; the oldest wins.

    The same steps as every link :func:`register_image` makes: one transaction on
    the embedded store; on Arvados, look again after creating and delete this
    run's extra if concurrent runs each made one; rolled back on failure.
    """
    with _rolled_back_on_failure(backend) as created, backend.atomic():
        return _ensure_link(
            backend,
            link_class=link_class,
            name=name,
            head_uuid=head_uuid,
            owner_uuid=owner_uuid,
            properties=properties or {},
            created=created,
            tail_uuid=tail_uuid,
        )


def _register(
    backend: Backend,
    request: ImageRegistration,
    manifest_text: str | None,
    existing: Record | None,
    force: bool,
    accept: Accept | None,
    created: list[_Made],
) -> Registered | None:
    owner = request.owner_uuid
    link_properties: dict[str, Any] = {}
    if request.image_timestamp is not None:
        link_properties["image_timestamp"] = request.image_timestamp
    collection: Record | None = None
    reused = False
    copied_from: Record | None = None

    if not force:
        found = find_reusable(backend, request.image_id, owner, accept)
        if found is not None:
            candidate, best_link = found
            reused, copied_from = True, candidate
            # arv-keepdocker: the new links take the properties of the best existing link.
            if (best_link.get("properties") or {}).get("image_timestamp"):
                link_properties = dict(best_link["properties"])
            if candidate["owner_uuid"] == owner:
                collection = candidate
            else:
                manifest_text, existing = candidate["manifest_text"], None
    if collection is None and existing is not None:
        collection, reused = existing, True
    if collection is None:
        if manifest_text is None:
            return None  # only looking for a stored copy, and there is none
        collection = _collection_from_manifest(backend, request, manifest_text, force, created)

    links = [(HASH_LINK, request.image_id)] + [(REPO_TAG_LINK, tag) for tag in request.repo_tags]
    _ensure_links(backend, collection["uuid"], owner, links, link_properties, created)
    if not collection.get("portable_data_hash"):
        collection = backend.get_collection(collection["uuid"])
    return Registered(
        collection=collection,
        reused=reused,
        copied_from=copied_from,
        created=tuple(made.uuid for made in created if made.uuid),
    )


def _adoptable(backend: Backend, request: ImageRegistration, pdh: str) -> Record | None:
    """The oldest collection of the owner's with this PDH (so the same single file)."""
    for record in backend.list_collections(
        [["owner_uuid", "=", request.owner_uuid], ["portable_data_hash", "=", pdh]]
    ):
        if _holds_only(record, request.file_name):
            return record
    return None


def _collection_from_manifest(
    backend: Backend,
    request: ImageRegistration,
    manifest_text: str,
    force: bool,
    created: list[_Made],
) -> Record:
    """Adopt the owner's collection with this manifest, else create it (convergently)."""
    pdh = portable_data_hash(manifest_text)
    if not force:
        adopted = _adoptable(backend, request, pdh)
        if adopted is not None:
            return adopted

    def create(unique: bool) -> Record:
        filters: list[list[Any]] = [
            ["owner_uuid", "=", request.owner_uuid],
            ["portable_data_hash", "=", pdh],
        ]
        before = frozenset(r["uuid"] for r in backend.list_collections(filters, select=["uuid"]))
        made = _Made("collection", filters, before)
        created.append(made)
        record = backend.create_collection(
            manifest_text=manifest_text,
            name=request.collection_name,
            owner_uuid=request.owner_uuid,
            properties=request.collection_properties,
            ensure_unique_name=unique,
        )
        made.uuid = record["uuid"]
        return record

    if force:
        return create(True)
    try:
        return create(False)
    except ConflictError:
        # The name is taken: by a concurrent load of this image (adopt its
        # collection), or by some other collection (take a unique name instead).
        created.pop()  # nothing was created
        adopted = _adoptable(backend, request, pdh)
        if adopted is not None:
            return adopted
        return create(True)


def _ensure_links(
    backend: Backend,
    head_uuid: str,
    owner_uuid: str,
    links: Sequence[tuple[str, str]],
    properties: Mapping[str, Any],
    created: list[_Made],
) -> None:
    """:func:`_ensure_link` for each ``(link_class, name)`` of *links*."""
    for link_class, name in links:
        _ensure_link(
            backend,
            link_class=link_class,
            name=name,
            head_uuid=head_uuid,
            owner_uuid=owner_uuid,
            properties=properties,
            created=created,
        )


def _ensure_link(
    backend: Backend,
    *,
    link_class: str,
    name: str,
    head_uuid: str,
    owner_uuid: str,
    properties: Mapping[str, Any],
    created: list[_Made],
    tail_uuid: str | None = None,
) -> Record:
    """The link (class, name, head, owner, tail if given): the oldest one, created if missing.

    After creating, look again: if concurrent runs each made one, keep the oldest
    and delete this run's own extra.
    """
    filters: list[list[Any]] = [
        ["link_class", "=", link_class],
        ["name", "=", name],
        ["head_uuid", "=", head_uuid],
        ["owner_uuid", "=", owner_uuid],
    ]
    if tail_uuid is not None:
        filters.append(["tail_uuid", "=", tail_uuid])
    found = list(backend.list_links(filters))
    if found:
        return found[0]
    made = _Made("link", filters, frozenset())
    created.append(made)
    link = backend.create_link(
        link_class=link_class,
        name=name,
        head_uuid=head_uuid,
        owner_uuid=owner_uuid,
        properties=properties,
        tail_uuid=tail_uuid,
    )
    made.uuid = link["uuid"]
    found = list(backend.list_links(filters))
    oldest = found[0] if found else link
    if oldest["uuid"] != link["uuid"]:
        backend.delete_link(link["uuid"])
        created.remove(made)
    return oldest


def _rollback(backend: Backend, created: Sequence[_Made]) -> list[str]:
    """Remove what this run created, through a fresh connection; return what is left.

    A request whose answer never came (Ctrl-C, a lost connection) may have been
    carried out: what its filters find now, and did not find before, is removed
    too.  A collection that links this run did not make point to (another run
    adopted it) is kept, and so are this run's links on it: the other run found
    them and counts on them; they are no longer this run's to remove.

    A second Ctrl-C stops the rollback: what it had not yet removed is returned,
    so the error names it instead of a bare "interrupted".
    """
    if not created:
        return []
    targets: list[tuple[str, str, str | None]] = []  # (kind, uuid, head_uuid of a link)
    adopted: set[str] = set()
    try:
        fresh = backend.reopen()
        for made in created:
            head = next((f[2] for f in made.filters if f[0] == "head_uuid"), None)
            if made.uuid is not None:
                targets.append((made.kind, made.uuid, head))
                continue
            method = fresh.list_links if made.kind == "link" else fresh.list_collections
            targets.extend(
                (made.kind, record["uuid"], head)
                for record in method(made.filters, select=["uuid"])
                if record["uuid"] not in made.before
            )
        own = {uuid for _, uuid, _ in targets}
        for kind, uuid, _ in targets:
            if kind == "collection" and any(
                link["uuid"] not in own
                for link in fresh.list_links([["head_uuid", "=", uuid]], select=["uuid"])
            ):
                adopted.add(uuid)  # a concurrent run registered it: theirs now
    except (KeeptarError, KeyboardInterrupt):  # KeyboardInterrupt: Ctrl-C again
        return [made.uuid or f"a {made.kind} (unknown UUID)" for made in created]
    left: list[str] = []
    pending = [t for t in reversed(targets) if t[1] not in adopted and t[2] not in adopted]
    for index, (kind, uuid, _) in enumerate(pending):
        try:
            if kind == "link":
                with contextlib.suppress(NotFoundError):
                    fresh.delete_link(uuid)
                if list(fresh.list_links([["uuid", "=", uuid]], select=["uuid"])):
                    left.append(uuid)
                continue
            with contextlib.suppress(NotFoundError):
                fresh.delete_collection(uuid)
            if list(fresh.list_collections([["uuid", "=", uuid]], select=["uuid"])):
                left.append(uuid)
        except (KeeptarError, OSError):
            left.append(uuid)
        except KeyboardInterrupt:  # Ctrl-C again: stop here, and name what may be left
            left.extend(rest for _, rest, _ in pending[index:])
            break
    return list(reversed(left))


def _keepdocker_cache_dir() -> Path:
    """``arv-keepdocker``'s cache directory (the SDK's CACHE base directory + ``docker``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "arvados" / "docker"


@contextlib.contextmanager
def _keepdocker_lock(backend: Backend, image_id: str) -> Iterator[None]:
    """Hold ``arv-keepdocker``'s lock for this image while registering, if it exists here.

    ``arv-keepdocker`` takes ``flock(LOCK_EX)`` on ``<cache>/docker/<image hash>.tar.lock``
    for its whole upload and registration.  The file is never created here.
    """
    if backend.kind != "arvados":
        yield
        return
    path = _keepdocker_cache_dir() / f"{image_id}.tar.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield  # no lock file (or not ours to open): arv-keepdocker is not used here
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
