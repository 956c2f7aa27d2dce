"""The narrow interface every storage backend implements.

Records are plain dicts shaped like the Arvados API's (``uuid``,
``owner_uuid``, ``portable_data_hash``, ``properties``…), so commands never
need to know which backend produced them.  Filters use the Arvados filter
language: ``[[attribute, operator, operand], …]`` with ``=``, ``!=``, ``in``,
``not in``, ``like``, ``ilike``, ``<``, ``<=``, ``>``, ``>=``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from keeptar.keep.resume import ResumeScope

__all__ = ["Backend", "Filters", "Record", "ServerFacts", "User"]

Record = dict[str, Any]
Filters = Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a cluster says about itself.

    Attributes:
        docker_image_formats: accepted image formats (``"v1"``, ``"v2"``).
        uuid_prefix: the five-character cluster ID.
        default_replication: copies of each block the cluster keeps by default.
    """

    docker_image_formats: tuple[str, ...]
    uuid_prefix: str
    default_replication: int = 2


@dataclass(frozen=True, slots=True)
class User:
    """The user a backend acts as; their home project has their own UUID."""

    uuid: str
    is_admin: bool
    full_name: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)


class Backend(Protocol):
    """Storage keeptar writes images to: the embedded store or an Arvados cluster."""

    #: ``"local"`` or ``"arvados"``.
    kind: str
    #: True if ``put_block`` writes straight from the caller's buffer; False if it
    #: copies the block first anyway (callers may then hand it a private copy and
    #: free their source before the upload runs).
    stores_in_place: bool
    #: True if ``has_block`` can vouch for a block that another process stored, given
    #: only ``md5+size``, so a re-run may skip storing it (resuming a load).  False on
    #: Arvados: keepstore answers a HEAD only for a locator with a permission
    #: signature, and only a PUT hands one out.
    confirms_stored_blocks: bool

    def atomic(self) -> AbstractContextManager[None]:
        """A context in which this handle's catalog calls form one unit, where the store can.

        On the embedded store: one SQLite ``BEGIN IMMEDIATE`` transaction that every
        call made inside it joins, so other processes see all of it or nothing, and
        writers serialise; an exception rolls it all back.  On Arvados, where no
        transaction spans API calls, it does nothing: callers must be convergent
        (see :mod:`keeptar.catalog.registration`).
        """
        ...

    def reopen(self) -> Backend:
        """A new handle on the same store with connections of its own.

        For cleaning up after an interrupt or a transport error, when this handle's
        connection may still hold a half-read response.
        """
        ...

    def server_facts(self) -> ServerFacts:
        """Return cluster facts (accepted image formats, UUID prefix, replication)."""
        ...

    def current_user(self) -> User:
        """Return the user this backend acts as."""
        ...

    def get_project(self, uuid: str) -> Record:
        """Return the project (group, or user home project) *uuid* with ``can_write``.

        Raises:
            UsageError: *uuid* is not a project or user UUID.
            NotFoundError: no such project is visible.
        """
        ...

    def put_block(self, data: bytes | memoryview, *, md5: str | None = None) -> str:
        """Store one block of at most 64 MiB; return its (maybe signed) locator.

        *md5* is the caller's hex md5 of *data*, if it has one (a store may then skip
        hashing it again).
        """
        ...

    def get_block(self, locator: str) -> bytes:
        """Return the bytes of the block *locator* names, checked against its md5."""
        ...

    def resume_scope(self) -> ResumeScope | None:
        """Whose signed locators a resume cache of this store holds, or None if the store
        needs no cache (``has_block`` vouches for unsigned locators, as on the embedded
        store).  See :mod:`keeptar.keep.resume`.
        """
        ...

    def has_block(self, locator: str) -> bool:
        """Whether the block *locator* names is stored, at its full size (no hashing).

        Only a definite "not there" is False; a store that cannot answer raises.

        Raises:
            BackendError: the question could not be answered (after retries).
        """
        ...

    def create_collection(
        self,
        *,
        manifest_text: str,
        name: str,
        owner_uuid: str,
        properties: Mapping[str, Any],
        ensure_unique_name: bool = False,
    ) -> Record:
        """Create a collection; with *ensure_unique_name*, rename on a name clash.

        Raises:
            ConflictError: without *ensure_unique_name*, the owner already has a
                collection of that name (the store's unique ``(owner_uuid, name)`` index).
        """
        ...

    def get_collection(self, uuid_or_pdh: str) -> Record:
        """Return a collection by UUID, or the newest readable one with that PDH.

        Raises:
            NotFoundError: none is visible.
        """
        ...

    def list_collections(
        self, filters: Filters, *, select: Sequence[str] | None = None
    ) -> Iterator[Record]:
        """Yield every readable collection matching *filters*, oldest first."""
        ...

    def update_collection(self, uuid: str, *, properties: Mapping[str, Any]) -> Record:
        """Replace a collection's properties."""
        ...

    def delete_collection(self, uuid: str) -> None:
        """Delete (trash) a collection."""
        ...

    def create_link(
        self,
        *,
        link_class: str,
        name: str,
        head_uuid: str,
        properties: Mapping[str, Any],
        owner_uuid: str | None = None,
        tail_uuid: str | None = None,
    ) -> Record:
        """Create a link (owned by the current user unless *owner_uuid* is given)."""
        ...

    def list_links(
        self, filters: Filters, *, select: Sequence[str] | None = None
    ) -> Iterator[Record]:
        """Yield every readable link matching *filters*, oldest first."""
        ...

    def delete_link(self, uuid: str) -> None:
        """Delete a link."""
        ...
