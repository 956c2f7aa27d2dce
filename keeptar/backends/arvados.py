"""The Arvados backend: a cluster reached through ``arvados-python-client``.

Configuration is the SDK's own: ``ARVADOS_API_HOST``, ``ARVADOS_API_TOKEN``,
``ARVADOS_API_HOST_INSECURE`` or its settings file.  Blocks go through
``KeepClient`` (its retries, its put threads for replicas), lists through
``arvados.util.keyset_list_all``.  The API token never appears in a message:
every error text passes through :func:`scrub` first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from keeptar.backends._protocol import Filters, Record, ServerFacts, User
from keeptar.errors import BackendError, ConflictError, KeeptarError, NotFoundError, UsageError
from keeptar.keep.manifest import check_owner_uuid, is_portable_data_hash
from keeptar.keep.resume import ResumeScope

__all__ = ["ArvadosBackend", "scrub"]

T = TypeVar("T")
_SECRETS: set[str] = set()


def scrub(text: str) -> str:
    """Remove every API token keeptar knows of, and every block permission signature
    (``+A<signature>@<expiry>``: it grants reading the block), from *text*."""
    for secret in _SECRETS:
        if secret:
            text = text.replace(secret, "***")
            if secret.startswith("v2/"):
                text = text.replace(secret.rsplit("/", 1)[-1], "***")
    return _SIGNATURE.sub("+A***", text)


_SIGNATURE = re.compile(r"\+A[0-9a-fA-F]{40}@[0-9a-fA-F]{8}")
# What a collection record has on every Arvados 2 server (a discovery document without
# schemas: the fields keeptar may read).
_COLLECTION_FIELDS = (
    *("uuid", "owner_uuid", "name", "description", "portable_data_hash", "manifest_text"),
    *("properties", "created_at", "modified_at", "trash_at", "is_trashed"),
)


def _remember_token(token: str | None) -> None:
    if token:
        _SECRETS.add(token)


class ArvadosBackend:
    """Backend for an Arvados cluster.

    Args:
        api: an ``arvados.api('v1')`` client; made from the SDK's configuration if None.
        num_retries: retries for API calls and Keep operations (default
            ``KEEPTAR_RETRIES``, else 5).
        quiet: silence the SDK's own logging (the CLI reports errors itself).
    """

    kind = "arvados"
    stores_in_place = False  # KeepClient.put keeps its own copy of each block
    # A HEAD needs a signed locator (keepstore's checkLocatorSignature under BlobSigning)
    # and only a PUT returns one: a re-run resumes from the signed locators the
    # interrupted load recorded on disk (keeptar.keep.resume, as arv-put's cache).
    confirms_stored_blocks = False

    def __init__(
        self, api: Any = None, *, num_retries: int | None = None, quiet: bool = False
    ) -> None:
        from keeptar.backends import arvados_settings

        settings = arvados_settings()
        _remember_token(settings.get("ARVADOS_API_TOKEN"))
        if num_retries is None:
            num_retries = int(os.environ.get("KEEPTAR_RETRIES", "5"))
        self._retries = num_retries
        self._quiet = quiet
        host = settings.get("ARVADOS_API_HOST", "")
        self._connection = (
            host,
            settings.get("ARVADOS_API_TOKEN"),
            settings.get("ARVADOS_API_HOST_INSECURE", "").lower() in ("1", "true", "yes", "on"),
        )
        try:
            import arvados
            import arvados.errors
            import arvados.util

            if quiet:
                _silence_sdk_logging()
            self._util = arvados.util
            self._sdk_errors = arvados.errors
            if api is None:
                # Explicit settings: the SDK's own settings() caches the environment
                # once per process, which would ignore later changes.
                api = self._new_api()
            else:
                self._connection = _connection_of(api, self._connection)
            self._api = api
            _remember_token(getattr(self._api, "api_token", None))
            self._keep = arvados.KeepClient(api_client=self._api, num_retries=num_retries)
        except KeeptarError:
            raise
        except Exception as exc:
            refused = _token_refused(f"connecting to the Arvados API server at {host}", exc)
            if refused is not None:
                raise refused from None
            raise BackendError(
                scrub(f"cannot reach the Arvados API server at {host}: {_reason(exc)}")
            ) from None
        self._facts: ServerFacts | None = None
        self._user: User | None = None

    def _new_api(self) -> Any:
        import arvados

        host, token, insecure = self._connection
        return arvados.api(
            "v1", host=host, token=token, insecure=insecure, num_retries=self._retries
        )

    def reopen(self) -> ArvadosBackend:
        """A new handle with a new API client and a new HTTP connection.

        After Ctrl-C the old client's reused httplib2 connection may still hold the
        answer to the interrupted request; a request sent on it would read that.
        """
        fresh = ArvadosBackend(self._new_api(), num_retries=self._retries, quiet=self._quiet)
        fresh._facts, fresh._user = self._facts, self._user
        return fresh

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Nothing: no transaction spans Arvados API calls (registration is convergent)."""
        yield

    # ---- plumbing --------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except KeeptarError:
            raise
        except Exception as exc:
            raise _translate(what, exc) from None

    def _execute(self, what: str, request: Any) -> Any:
        return self._call(what, lambda: request.execute(num_retries=self._retries))

    def _list_all(
        self, method: Any, what: str, filters: Filters, select: Sequence[str] | None
    ) -> Iterator[Record]:
        kwargs: dict[str, Any] = {"filters": [list(f) for f in filters]}
        if select is not None:
            kwargs["select"] = list(select)
        pages = self._util.keyset_list_all(method, num_retries=self._retries, **kwargs)
        while True:
            item = self._call(what, lambda: next(pages, None))
            if item is None:
                return
            yield item if select is None else {k: item[k] for k in select if k in item}

    # ---- facts, users, projects ------------------------------------------------------

    def server_facts(self) -> ServerFacts:
        if self._facts is None:
            root = getattr(self._api, "_rootDesc", {}) or {}
            self._facts = ServerFacts(
                docker_image_formats=tuple(root.get("dockerImageFormats") or ()),
                uuid_prefix=str(root.get("uuidPrefix", "")),
                default_replication=int(root.get("defaultCollectionReplication") or 2),
            )
        return self._facts

    def current_user(self) -> User:
        if self._user is None:
            record = self._execute("getting the current user", self._api.users().current())
            self._user = User(
                uuid=record["uuid"],
                is_admin=bool(record.get("is_admin")),
                full_name=record.get("full_name") or "",
                extra=record,
            )
        return self._user

    def get_project(self, uuid: str) -> Record:
        check_owner_uuid(uuid)
        user = self.current_user()
        if "-tpzed-" in uuid:
            record = self._execute(f"looking up user {uuid}", self._api.users().get(uuid=uuid))
            # The server computes can_write for user records too (ArvadosModel#can_write:
            # yourself, admins, and users whose home project was shared with you).
            writable = record.get("can_write")
            if writable is None:  # an older server: only your own home, or any as admin
                writable = uuid == user.uuid or user.is_admin
            return {**record, "can_write": bool(writable)}
        record = self._execute(f"looking up project {uuid}", self._api.groups().get(uuid=uuid))
        if record.get("group_class") not in (None, "project"):
            raise UsageError(f"{uuid} is a {record.get('group_class')} group, not a project")
        can_write = record.get("can_write")
        if can_write is None:
            can_write = user.is_admin or record.get("owner_uuid") == user.uuid
        return {**record, "can_write": bool(can_write)}

    # ---- blocks ----------------------------------------------------------------------

    def put_block(self, data: bytes | memoryview, *, md5: str | None = None) -> str:
        copies = self.server_facts().default_replication
        locator: str = self._call(
            "storing a block in Keep", lambda: self._keep.put(_as_bytes(data), copies=copies)
        )
        return locator

    def get_block(self, locator: str) -> bytes:
        data: bytes = self._call(
            f"reading block {locator[:34]} from Keep", lambda: self._keep.get(locator)
        )
        return data

    def resume_scope(self) -> ResumeScope:
        """This cluster, the current user, and a digest of the token (signatures are
        bound to it: a cache written with another token is not used)."""
        host, token, _ = self._connection
        return ResumeScope(
            cluster=host,
            user=self.current_user().uuid,
            credential=hashlib.sha256((token or "").encode()).hexdigest(),
        )

    def has_block(self, locator: str) -> bool:
        def head() -> bool:
            # Retried like every other Keep call.  Only "not found" from every service
            # (the SDK's NotFoundError) means missing; a HEAD nobody could answer is an
            # error, never a reason to store the image again.
            try:
                self._keep.head(locator, num_retries=self._retries)
            except self._sdk_errors.NotFoundError:
                return False
            return True

        return self._call(f"looking for block {locator[:34]} in Keep", head)

    # ---- collections -----------------------------------------------------------------

    def create_collection(
        self,
        *,
        manifest_text: str,
        name: str,
        owner_uuid: str,
        properties: Mapping[str, Any],
        ensure_unique_name: bool = False,
    ) -> Record:
        body = {
            "manifest_text": manifest_text,
            "name": name,
            "owner_uuid": owner_uuid,
            "properties": dict(properties),
        }
        request = self._api.collections().create(body=body, ensure_unique_name=ensure_unique_name)
        record: Record = self._execute(f"creating collection {name!r}", request)
        return record

    def get_collection(self, uuid_or_pdh: str) -> Record:
        if is_portable_data_hash(uuid_or_pdh):
            # The newest readable one, then read by UUID: a collections index leaves
            # manifest_text out unless the select names it (CollectionsController).
            request = self._api.collections().list(
                filters=[["portable_data_hash", "=", uuid_or_pdh]],
                select=["uuid"],
                order=["created_at desc", "uuid desc"],
                limit=1,
                count="none",
            )
            items = self._execute(f"looking up collection {uuid_or_pdh}", request)["items"]
            if not items:
                raise NotFoundError(f"collection {uuid_or_pdh} not found")
            uuid_or_pdh = items[0]["uuid"]
        found: Record = self._execute(
            f"looking up collection {uuid_or_pdh}", self._api.collections().get(uuid=uuid_or_pdh)
        )
        return found

    def list_collections(
        self, filters: Filters, *, select: Sequence[str] | None = None
    ) -> Iterator[Record]:
        if select is None:  # every field, as the embedded store gives
            select = self._collection_fields()
        return self._list_all(self._api.collections().list, "listing collections", filters, select)

    def _collection_fields(self) -> list[str]:
        """The Collection attributes the server's discovery document names (but the
        computed ``etag``), ``manifest_text`` among them: a collections index leaves it
        out unless the select names it (``CollectionsController#load_select_param``)."""
        root = getattr(self._api, "_rootDesc", None) or {}
        schema = ((root.get("schemas") or {}).get("Collection") or {}).get("properties") or {}
        fields = [name for name in schema if name not in ("etag", "unsigned_manifest_text")]
        return fields or list(_COLLECTION_FIELDS)

    def update_collection(self, uuid: str, *, properties: Mapping[str, Any]) -> Record:
        request = self._api.collections().update(uuid=uuid, body={"properties": dict(properties)})
        record: Record = self._execute(f"updating collection {uuid}", request)
        return record

    def delete_collection(self, uuid: str) -> None:
        self._execute(f"deleting collection {uuid}", self._api.collections().delete(uuid=uuid))

    # ---- links -----------------------------------------------------------------------

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
        body: dict[str, Any] = {
            "link_class": link_class,
            "name": name,
            "head_uuid": head_uuid,
            "properties": dict(properties),
        }
        if owner_uuid is not None:
            body["owner_uuid"] = owner_uuid
        if tail_uuid is not None:
            body["tail_uuid"] = tail_uuid
        record: Record = self._execute(
            f"creating {link_class} link", self._api.links().create(body=body)
        )
        return record

    def list_links(
        self, filters: Filters, *, select: Sequence[str] | None = None
    ) -> Iterator[Record]:
        return self._list_all(self._api.links().list, "listing links", filters, select)

    def delete_link(self, uuid: str) -> None:
        self._execute(f"deleting link {uuid}", self._api.links().delete(uuid=uuid))


class _Discard(logging.Handler):
    """A real (non-Null) handler, so the SDK does not install its own; drops everything."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


def _silence_sdk_logging() -> None:
    """Keep the SDK's retry chatter off stderr (the CLI reports failures in one line)."""
    for name in ("arvados", "googleapiclient", "googleapiclient.http", "urllib3"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)
        logger.propagate = False
        if not any(isinstance(h, _Discard) for h in logger.handlers):
            logger.addHandler(_Discard())


def _as_bytes(data: bytes | memoryview) -> bytes:
    """*data* as bytes, without a copy when it already views a whole bytes object.

    KeepClient reads the block through a BytesIO, which shares a bytes object but
    would copy anything else.
    """
    if isinstance(data, bytes):
        return data
    owner = data.obj
    if isinstance(owner, bytes) and len(owner) == data.nbytes:
        return owner
    return bytes(data)


def _connection_of(api: Any, default: tuple[str, str | None, bool]) -> tuple[str, str | None, bool]:
    """(host, token, insecure) of an SDK client, so that a fresh one can be made."""
    from urllib.parse import urlsplit

    root = (getattr(api, "_rootDesc", None) or {}).get("rootUrl") or ""
    host = urlsplit(root).netloc or default[0]
    token = getattr(api, "api_token", None) or default[1]
    http = getattr(api, "_http", None)
    insecure = getattr(http, "disable_ssl_certificate_validation", default[2])
    return host, token, bool(insecure)


def _reason(exc: BaseException) -> str:
    text = " ".join(scrub(str(exc)).split()) or type(exc).__name__  # scrubbed, then cut
    return text[:300]


def _translate(what: str, exc: BaseException) -> KeeptarError:
    """Turn an SDK or transport exception into a keeptar error naming *what* failed."""
    refused = _token_refused(what, exc)
    if refused is not None:
        return refused
    status = getattr(getattr(exc, "resp", None), "status", None)
    if status is not None:
        detail = _api_error_detail(exc)
        message = scrub(f"{what}: the API server answered {status}: {detail}")
        if int(status) == 404:
            return NotFoundError(message)
        if int(status) == 422 and (
            "RecordNotUnique" in detail or "already exists" in detail.lower()
        ):
            # The unique (owner_uuid, name) index: the API server answers 422 with
            # "#<ActiveRecord::RecordNotUnique: PG::UniqueViolation: … already exists.>".
            return ConflictError(message)
        return BackendError(message)
    return BackendError(scrub(f"{what}: {_reason(exc)}"))


def _token_refused(what: str, exc: BaseException) -> BackendError | None:
    """The error for an API answer that refuses the token itself, else None.

    That is a 401 (the server's ``Not logged in``: unknown, expired or revoked
    token), or a 403 whose only reason is ``Forbidden`` (the token's scopes do
    not allow the request).  A 403 that names a permission ("Permission denied:
    cannot write to …") is about the object, not the token, and is not one.
    """
    status = getattr(getattr(exc, "resp", None), "status", None)
    if status is None:
        return None
    detail = _api_error_detail(exc)
    if int(status) == 401:
        return BackendError(
            scrub(
                f"{what}: the API server refused the token ({status} {detail}): it is "
                "unknown, expired or revoked; check ARVADOS_API_TOKEN"
            )
        )
    if int(status) == 403 and detail.strip() == "Forbidden":
        return BackendError(
            scrub(
                f"{what}: the API server refused the token for this request ({status} "
                f"{detail}): its scopes, or its user's rights, do not allow it"
            )
        )
    return None


_REQUEST_ID_SUFFIX = re.compile(r" \(req-[0-9a-z]+\)$")


def _api_error_detail(exc: BaseException) -> str:
    """The server's error messages, each without the `` (<request id>)`` it appends."""
    content = getattr(exc, "content", b"")
    try:
        doc = json.loads(content)
        errors = [_REQUEST_ID_SUFFIX.sub("", str(e)) for e in doc.get("errors") or []]
        return " ".join(errors)[:300] or "(no details)"
    except (ValueError, AttributeError, TypeError):
        return _reason(exc)
