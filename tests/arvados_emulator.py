"""An Arvados API server and keepstore emulator on 127.0.0.1, for tests and benchmarks.

Not a product feature.  It serves the real discovery document (from the
``arvados-python-client`` sdist, see ``fixtures/arvados-v1-discovery.ORIGIN.md``)
over HTTPS with a throwaway self-signed certificate, the REST calls that keeptar,
``arv-put``, ``arv-get``, ``arv-keepdocker``, ``KeepClient`` and ``arvados-cwl-runner``
make, and two keepstores over plain HTTP.  Its semantics follow the server code
(``services/api``, ``lib/controller`` and ``services/keepstore`` in arvados/arvados):

- permission signatures ``+A<hmac-sha1(key, md5@token@expiry@ttl)>@<expiry>``;
  non-admin manifests need a valid one on every non-empty locator (403),
  manifests are stored without hints and signed again for each reader;
  keepstore checks the signature of a GET or HEAD before looking for the block, as
  ``checkLocatorSignature`` does: no token 401, an expired signature 401, a missing
  or wrong one 400 (so the SDK's ``head`` says "not found" only for a real 404);
- a user reads what they own (directly or through projects they own), what a
  ``permission`` link shares with them, and admins read everything;
- 422 for what the server refuses: a manifest ``Keep::Manifest.validate!``
  refuses, a collection or project name that is ``.``, ``..`` or holds ``/``
  (``ensure_filesystem_compatible_name``, ``ForwardSlashNameSubstitution: ""``),
  and a name or other ``character varying(255)`` column over 255 characters;
- ``ensure_unique_name`` appends `` (<last 15 of uuid>)`` to a clashing name; without
  it a clash is the 422 ``#<ActiveRecord::RecordNotUnique: PG::UniqueViolation: …>``
  that ``ApplicationController#render_error`` sends, error messages ending in
  `` (<X-Request-Id>)`` as ``send_error`` writes them;
- user records carry ``can_write``/``can_manage`` for the caller, as groups do;
- ``GET collections/<pdh>`` returns ``{uuid: pdh, portable_data_hash, manifest_text}``;
- lists take ``filters`` (``= != < <= > >= in, not in, like, ilike, exists``),
  ``select``, ``order``, ``limit`` (default 100, max 1000), ``offset``, ``count``;
- a POST with a form body and ``_method`` or ``X-Http-Method-Override`` is routed as
  that method (googleapiclient sends every GET longer than 2048 characters so);
- each keepstore has one volume and answers ``X-Keep-Replicas-Stored: 1``, so
  ``default_replication`` copies take that many services (``keepstores``);
- ``*_uuid`` fields must name readable records (422 ``Head uuid '…' not found``),
  owners must be users or projects the caller can write (403); whatever a trashed
  project owns is hidden; users and groups carry ``can_write``/``can_manage``;
- ``container_requests`` resolve ``container_image`` on commit with a port of
  ``Collection.find_all_for_docker_image``; the container records the image's PDH.

Faults can be injected per endpoint: :meth:`Emulator.inject` (an error status, a
dropped connection, a delay before the work, or a *hold*: the work done, the answer late).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import mmap
import os
import re
import secrets
import shutil
import socket
import ssl
import string
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DISCOVERY = Path(__file__).resolve().parent / "fixtures" / "arvados-v1-discovery.json"
_ALPHABET = string.ascii_lowercase + string.digits
_LOCATOR = re.compile(r"^([0-9a-f]{32})\+([0-9]+)((\+[A-Z][A-Za-z0-9@_-]*)*)$")
_UUID = re.compile(r"^[0-9a-z]{5}-([0-9a-z]{5})-[0-9a-z]{15}$")  # HasUuid::UUID_REGEX
_TYPE_OF = {
    "tpzed": "users",
    "j7d0g": "groups",
    "4zz18": "collections",
    "o0j2j": "links",
    "xvhdp": "container_requests",
    "dz642": "containers",
}
_INFIX = {v: k for k, v in _TYPE_OF.items()}
MAX_BLOCK = 1 << 26


class ApiError(Exception):
    def __init__(self, status: int, message: str, *more: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = [message, *more]  # Rails sends every validation message


@dataclass
class Fault:
    """A fault for requests whose method and path match."""

    method: str
    path: str
    status: int | None = None
    times: int = 1
    delay: float = 0.0
    drop: bool = False
    skip: int = 0
    hold: float = 0.0
    message: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and path.startswith(self.path)


@dataclass
class UserAccount:
    uuid: str
    token: str
    full_name: str
    is_admin: bool = False


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _self_signed_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class Emulator:
    """One emulated cluster.  Use as a context manager, or call start()/stop().

    Attributes:
        uuid_prefix: the cluster ID.
        docker_image_formats: served as ``dockerImageFormats``.
        blob_signature_ttl: seconds a permission signature lasts.
        default_replication: served as ``defaultCollectionReplication``.
        keepstores: keepstore services, each with one volume of its own (``block_dirs``):
            each stores one replica, so ``default_replication`` copies need as many services.
    """

    uuid_prefix: str = "zzzzz"
    docker_image_formats: list[str] = field(default_factory=lambda: ["v2"])
    blob_signature_ttl: int = 1209600
    default_replication: int = 2
    max_page_size: int = 1000  # API.MaxItemsPerResponse
    keepstores: int = 2
    blob_signing_key: str = field(default_factory=lambda: secrets.token_hex(32))

    def __post_init__(self) -> None:
        p = self.uuid_prefix
        self.system_user = f"{p}-tpzed-000000000000000"
        self.admin = UserAccount(
            f"{p}-tpzed-admin0000000000", "admintoken" + secrets.token_hex(16), "Admin User", True
        )
        self.alice = UserAccount(
            f"{p}-tpzed-alice0000000000", "alicetoken" + secrets.token_hex(16), "Alice Example"
        )
        self.bob = UserAccount(
            f"{p}-tpzed-bob000000000000", "bobtoken" + secrets.token_hex(16), "Bob Example"
        )
        self.accounts = {u.token: u for u in (self.admin, self.alice, self.bob)}
        self.lock = threading.RLock()
        self.tables: dict[str, dict[str, dict[str, Any]]] = {
            "users": {},
            "groups": {},
            "collections": {},
            "links": {},
            "container_requests": {},
            "containers": {},
        }
        for account in (self.admin, self.alice, self.bob):
            self.tables["users"][account.uuid] = {
                "uuid": account.uuid,
                "owner_uuid": self.system_user,
                "full_name": account.full_name,
                "first_name": account.full_name.split()[0],
                "last_name": account.full_name.split()[-1],
                "is_admin": account.is_admin,
                "is_active": True,
                "username": account.full_name.split()[0].lower(),
                "email": account.full_name.split()[0].lower() + "@example.com",
                "created_at": _now(),
                "modified_at": _now(),
                "kind": "arvados#user",
            }
        self.admin_project = self._add_group(
            f"{p}-j7d0g-adminproject000", self.admin.uuid, "Admin project"
        )
        self.alice_project = self._add_group(
            f"{p}-j7d0g-aliceproject000", self.alice.uuid, "Alice project"
        )
        self.bob_project = self._add_group(
            f"{p}-j7d0g-bobproject00000", self.bob.uuid, "Bob project"
        )
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.keep_bytes_served = 0  # block bytes the keepstores sent to GETs
        self.keep_put_hashes: list[str] = []  # the md5 of every keepstore PUT, in order
        self._tmp = Path(tempfile.mkdtemp(prefix="arv-emulator-"))
        self.block_dirs = [self._tmp / f"keep{n}" for n in range(self.keepstores)]
        for folder in self.block_dirs:
            folder.mkdir()
        self._servers: list[ThreadingHTTPServer] = []

    # ---- life cycle ------------------------------------------------------------------

    def start(self) -> Emulator:
        cert, key = _self_signed_cert(self._tmp)
        self._api_server = _Server(("127.0.0.1", 0), _ApiHandler, self)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._api_server.socket = context.wrap_socket(self._api_server.socket, server_side=True)
        keep_servers = [
            _Server(("127.0.0.1", 0), _KeepHandler, self, volume=folder)
            for folder in self.block_dirs
        ]
        for server in (self._api_server, *keep_servers):
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.api_port = self._api_server.server_address[1]
        self.keep_ports = [server.server_address[1] for server in keep_servers]
        self.keep_port = self.keep_ports[0]
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_host(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def env(self, account: UserAccount | None = None) -> dict[str, str]:
        """Environment variables that point the SDK at this cluster as *account* (admin)."""
        account = account or self.admin
        return {
            "ARVADOS_API_HOST": self.api_host,
            "ARVADOS_API_TOKEN": account.token,
            "ARVADOS_API_HOST_INSECURE": "1",
        }

    @contextlib.contextmanager
    def environment(self, account: UserAccount | None = None) -> Iterator[None]:
        """Temporarily set :meth:`env` in ``os.environ``."""
        saved = {k: os.environ.get(k) for k in self.env(account)}
        os.environ.update(self.env(account))
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def api(self, account: UserAccount | None = None, **kwargs: Any) -> Any:
        """An ``arvados.api('v1')`` client for *account* (admin by default)."""
        import arvados

        account = account or self.admin
        return arvados.api(
            "v1", host=self.api_host, token=account.token, insecure=True, cache=False, **kwargs
        )

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        times: int = 1,
        delay: float = 0.0,
        drop: bool = False,
        skip: int = 0,
        hold: float = 0.0,
        message: str | None = None,
    ) -> Fault:
        """Make the next *times* requests matching *method* and *path* prefix misbehave.

        Paths are ``/arvados/v1/<resource>…`` for the API and ``/keep/`` for every
        keepstore request.  *status* answers with that HTTP error, *drop* closes
        the connection without an answer, *delay* sleeps first.  *hold* carries
        out an API request, then sleeps before answering (the client may be
        interrupted while the server has already done it).  The first *skip*
        matching requests pass untouched.  *message* is the
        error the answer gives (as the server words it, e.g. ``Forbidden``).
        """
        fault = Fault(
            method.upper(), path, status, times, delay, drop, skip, hold, message
        )
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.matches(method, path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    fault.times -= 1
                    return fault
        return None

    # ---- model -----------------------------------------------------------------------

    def new_uuid(self, table: str) -> str:
        return f"{self.uuid_prefix}-{_INFIX[table]}-" + "".join(
            secrets.choice(_ALPHABET) for _ in range(15)
        )

    def _add_group(self, uuid: str, owner: str, name: str) -> dict[str, Any]:
        record = {
            "uuid": uuid,
            "owner_uuid": owner,
            "name": name,
            "group_class": "project",
            "description": None,
            "properties": {},
            "created_at": _now(),
            "modified_at": _now(),
            "kind": "arvados#group",
            "is_trashed": False,
        }
        self.tables["groups"][uuid] = record
        return record

    def share(self, head_uuid: str, with_user: UserAccount, level: str = "can_read") -> None:
        """Share *head_uuid* with *with_user* through a permission link."""
        uuid = self.new_uuid("links")
        self.tables["links"][uuid] = {
            "uuid": uuid,
            "owner_uuid": self.system_user,
            "link_class": "permission",
            "name": level,
            "tail_uuid": with_user.uuid,
            "head_uuid": head_uuid,
            "properties": {},
            "created_at": _now(),
            "modified_at": _now(),
            "kind": "arvados#link",
        }

    def _owner_chain(self, uuid: str) -> Iterator[str]:
        seen = set()
        current: str | None = uuid
        while current and current not in seen:
            seen.add(current)
            yield current
            table = _TYPE_OF.get(current.split("-")[1]) if current.count("-") == 2 else None
            record = self.tables.get(table or "", {}).get(current)
            current = record.get("owner_uuid") if record and table != "users" else None

    def permission(self, user: UserAccount, uuid: str) -> int:
        """0 none, 1 read, 2 write, 3 manage."""
        if user.is_admin:
            return 3
        best = 0
        levels = {"can_read": 1, "can_write": 2, "can_manage": 3}
        shared = {
            link["head_uuid"]: levels.get(link["name"], 0)
            for link in self.tables["links"].values()
            if link["link_class"] == "permission" and link["tail_uuid"] == user.uuid
        }
        for ancestor in self._owner_chain(uuid):
            if ancestor == user.uuid:
                return 3
            best = max(best, shared.get(ancestor, 0))
        return best

    def readable(self, user: UserAccount, table: str, record: dict[str, Any]) -> bool:
        if user.is_admin:
            return True
        if table == "links":
            if record["link_class"] == "permission" and record["tail_uuid"] == user.uuid:
                return True
            return self.permission(user, record["owner_uuid"]) >= 1
        if table == "users":
            return True
        return self.permission(user, record["uuid"]) >= 1

    # ---- records: trash, foreign UUIDs, owners (arvados_model.rb, link.rb) -----------

    def in_trash(self, table: str, record: dict[str, Any]) -> bool:
        """Trashed, or owned (at any depth) by a trashed project.

        ``ArvadosModel.readable_by``'s ``excluded_trash``: rows whose owner is in
        ``trashed_groups`` (every project under a trashed one) are left out, even
        for admins; groups and collections also by their own ``trash_at``.
        """
        if table in ("groups", "collections") and record.get("is_trashed"):
            return True
        owner = record.get("owner_uuid")
        seen: set[str] = set()
        while owner and owner not in seen and "-j7d0g-" in owner:
            seen.add(owner)
            group = self.tables["groups"].get(owner)
            if group is None:
                return False
            if group.get("is_trashed"):
                return True
            owner = group.get("owner_uuid")
        return False

    def visible(self, user: UserAccount, table: str, record: dict[str, Any]) -> bool:
        """What ``Model.readable_by(user)`` returns: readable and not in the trash."""
        return not self.in_trash(table, record) and self.readable(user, table, record)

    def check_foreign_uuids(
        self, user: UserAccount, record: dict[str, Any], attributes: list[str]
    ) -> list[str]:
        """``ArvadosModel#ensure_valid_uuids``: each ``*_uuid`` attribute set or changed
        that is a UUID of a known type must name a record the user can read (the system
        user is exempt).  Returns Rails' full messages, e.g. ``Head uuid '…' not found``.

        Covers ``owner_uuid``, ``tail_uuid`` and ``head_uuid``; a PDH or an unknown type
        is not checked, as on the server.
        """
        errors = []
        for attribute in attributes:
            value = record.get(attribute)
            if not isinstance(value, str) or value == self.system_user:
                continue
            match = _UUID.match(value)
            table = _TYPE_OF.get(match.group(1)) if match else None
            if table is None:
                continue
            target = self.tables[table].get(value)
            if target is None or not self.visible(user, table, target):
                label = attribute.replace("_", " ").capitalize()
                errors.append(f"{label} '{value}' not found")
        return errors

    def check_owner(self, user: UserAccount, owner: str | None, which: str = "new") -> None:
        """``ArvadosModel#ensure_owner_uuid_is_permitted`` for a new or changed owner:
        a user or a project the caller can write (403 otherwise)."""
        if not owner:
            raise ApiError(403, "Owner uuid cannot be nil")
        match = _UUID.match(owner)
        kind = match.group(1) if match else None
        if kind not in ("tpzed", "j7d0g"):
            raise ApiError(403, "Owner uuid must be set to User or Group")
        if (owner != self.system_user or not user.is_admin) and self.permission(user, owner) < 2:
            raise ApiError(
                403,
                f"Owner uuid cannot be set or changed without write permission on {which} owner",
            )
        if kind == "j7d0g" and self.tables["groups"][owner].get("group_class") != "project":
            raise ApiError(403, "Owner uuid must be a project")

    # ---- signatures ------------------------------------------------------------------

    def sign(self, md5: str, token: str, expiry: int | None = None) -> str:
        expiry = expiry if expiry is not None else int(time.time()) + self.blob_signature_ttl
        hex_expiry = format(expiry, "x")
        data = "@".join([md5, token, hex_expiry, format(self.blob_signature_ttl, "x")])
        signature = hmac.new(
            self.blob_signing_key.encode(), data.encode(), hashlib.sha1
        ).hexdigest()
        return f"+A{signature}@{hex_expiry}"

    def signature_valid(self, locator: str, token: str) -> bool:
        return self.signature_problem(locator, token) is None

    def signature_problem(self, locator: str, token: str) -> str | None:
        """None for a valid signature, else ``"expired"`` or ``"invalid"`` (a missing
        one too), in the order of ``arvados.VerifySignature``: expiry first."""
        match = _LOCATOR.match(locator)
        if not match:
            return "invalid"
        hints = [h for h in match.group(3).split("+") if h.startswith("A")]
        if not hints or "@" not in hints[0]:
            return "invalid"
        given, _, expiry = hints[0][1:].partition("@")
        if not re.fullmatch(r"[0-9a-f]+", expiry):
            return "invalid"
        if int(expiry, 16) < time.time():
            return "expired"
        data = "@".join([match.group(1), token, expiry, format(self.blob_signature_ttl, "x")])
        expected = hmac.new(self.blob_signing_key.encode(), data.encode(), hashlib.sha1).hexdigest()
        return None if hmac.compare_digest(expected, given) else "invalid"

    def signed_manifest(self, manifest: str, token: str) -> str:
        expiry = int(time.time()) + self.blob_signature_ttl
        out = []
        for line in manifest.splitlines():
            words = line.split(" ")
            for i, word in enumerate(words[1:], 1):
                match = _LOCATOR.match(word)
                if match:
                    words[i] = f"{match.group(1)}+{match.group(2)}" + self.sign(
                        match.group(1), token, expiry
                    )
            out.append(" ".join(words))
        return "".join(line + "\n" for line in out)


def strip_manifest(manifest: str) -> str:
    """The manifest as the server stores it: locator hints removed, lines normalised."""
    lines = []
    for line in manifest.splitlines():
        words = line.strip().split()
        if not words:
            continue
        words = [words[0]] + [
            f"{m.group(1)}+{m.group(2)}" if (m := _LOCATOR.match(w)) else w for w in words[1:]
        ]
        lines.append(" ".join(words))
    return "".join(line + "\n" for line in lines)


def pdh_of(manifest: str) -> str:
    stripped = strip_manifest(manifest).encode()
    return f"{hashlib.md5(stripped).hexdigest()}+{len(stripped)}"


_thread_state = threading.local()


def _receive_buffer() -> mmap.mmap:
    """This thread's reusable 64 MiB receive buffer (anonymous, page-aligned)."""
    buffer: mmap.mmap | None = getattr(_thread_state, "buffer", None)
    if buffer is None:
        buffer = _thread_state.buffer = mmap.mmap(-1, MAX_BLOCK)
    return buffer


def _write_block(path: Path, view: memoryview) -> None:
    """Write a block file, bypassing the page cache where the filesystem allows it.

    Like keepstore, no fsync.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        aligned = len(view) - len(view) % 4096
    except OSError:  # EINVAL: no direct I/O on this filesystem
        fd, aligned = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), -1
    try:
        done = 0
        if aligned >= 0:
            with contextlib.suppress(OSError):  # EINVAL: no direct I/O here after all
                while done < aligned:
                    done += os.write(fd, view[done:aligned])
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        while done < len(view):
            done += os.write(fd, view[done:])
    finally:
        os.close(fd)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type,
        emulator: Emulator,
        volume: Path | None = None,
    ) -> None:
        super().__init__(address, handler)
        self.emulator = emulator
        self.volume = volume  # a keepstore's one volume

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet broken pipes
        pass


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hold = 0.0
    # Headers and body go out in separate writes; with Nagle's algorithm the body
    # waits for the client's delayed ACK (~40 ms a response), which real servers avoid.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def emu(self) -> Emulator:
        return self.server.emulator

    def token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        for scheme in ("Bearer ", "OAuth2 "):
            if header.startswith(scheme):
                return header[len(scheme) :].strip()
        query = parse_qs(urlsplit(self.path).query)
        return query.get("api_token", [None])[0]

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(
        self,
        status: int,
        payload: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_json(self, status: int, doc: Any) -> None:
        self.send(status, json.dumps(doc).encode())

    def fault(self, path: str) -> bool:
        """Apply an injected fault; True if the request is finished."""
        self.emu.requests.append((self.command, path))
        fault = self.emu.take_fault(self.command, path)
        self.hold = fault.hold if fault is not None else 0.0
        if fault is None:
            return False
        if fault.delay:
            time.sleep(fault.delay)
        if fault.drop:
            self.body()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if fault.status is not None:
            self.body()
            message = fault.message or f"injected fault {fault.status}"
            self.send_json(fault.status, {"errors": [message]})
            return True
        return False


class _KeepHandler(_Base):
    @property
    def volume(self) -> Path:
        assert self.server.volume is not None
        return self.server.volume

    def do_PUT(self) -> None:
        if self.fault("/keep/"):
            return
        length = int(self.headers.get("Content-Length") or 0)
        # keepstore's route /{locator:[0-9a-f]{32}.*}: a size hint may follow the hash.
        wanted = urlsplit(self.path).path.lstrip("/")
        md5 = wanted[:32]
        with self.emu.lock:
            self.emu.keep_put_hashes.append(md5)
        if not re.fullmatch(r"[0-9a-f]{32}", md5):
            self.body()
            return self.send(400, b"Bad Request\n", "text/plain")
        account = self.emu.accounts.get(self.token() or "")
        if account is None:
            self.body()
            return self.send(401, b"Unauthorized\n", "text/plain")
        if length > MAX_BLOCK:
            while length > 0:  # drain the body so the client reads our answer
                length -= len(self.rfile.read(min(length, 1 << 20)) or b"\0" * length)
            return self.send(413, b"Block too large\n", "text/plain")
        # Read straight into one buffer, as keepstore does.  The buffer is this
        # thread's own page-aligned mmap, reused, so a block costs no fresh pages and
        # can be written with direct I/O: on a 2-core machine the emulator's CPU time
        # is taken from the client being measured, which a real keepstore's is not.
        buffer = _receive_buffer()
        view = memoryview(buffer)[:length]
        digest = hashlib.md5()  # hashed as it arrives; nothing is stored unless it matches
        got = 0
        while got < length:
            count = self.rfile.readinto(view[got:])
            if not count:
                return
            digest.update(view[got : got + count])
            got += count
        if digest.hexdigest() != md5:  # BlockWrite: 400, nothing stored
            message = f"content hash {digest.hexdigest()} did not match specified locator {wanted}"
            return self.send(400, (message + "\n").encode(), "text/plain")
        path = self.volume / md5
        if not path.exists():
            tmp = path.with_suffix(f".{threading.get_ident()}")
            _write_block(tmp, view)
            os.replace(tmp, path)
        locator = f"{md5}+{length}" + self.emu.sign(md5, account.token)
        # What was stored, not what was asked (X-Keep-Desired-Replicas): keepstore
        # writes to its own volumes only, here one volume of replication 1.
        self.send(
            200,
            (locator + "\n").encode(),
            "text/plain",
            {"X-Keep-Replicas-Stored": "1", "X-Keep-Storage-Classes-Confirmed": "default=1"},
        )

    def do_GET(self) -> None:
        if self.fault("/keep/"):
            return
        locator = unquote(urlsplit(self.path).path.strip("/"))
        match = _LOCATOR.match(locator)
        if not match:
            return self.send(400, b"Bad locator\n", "text/plain")
        # keepstore's checkLocatorSignature, before it looks for the block: errNoTokenProvided
        # and errExpiredSignature are 401, errInvalidSignature (missing or wrong) is 400.
        token = self.token() or ""
        if not token:
            return self.send(401, b"no token provided in Authorization header\n", "text/plain")
        problem = self.emu.signature_problem(locator, token)
        if problem == "expired":
            return self.send(401, b"expired signature\n", "text/plain")
        if problem is not None:
            return self.send(400, b"invalid signature\n", "text/plain")
        path = self.volume / match.group(1)
        if not path.exists():
            return self.send(404, b"Not Found\n", "text/plain")
        data = path.read_bytes()
        if self.command == "GET":
            with self.emu.lock:
                self.emu.keep_bytes_served += len(data)
        self.send(200, data, "application/octet-stream")

    do_HEAD = do_GET


class _ApiHandler(_Base):
    method = "GET"  # the method routed: the request's, or the one a POST form overrides

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PUT(self) -> None:
        self.dispatch()

    def do_PATCH(self) -> None:
        self.dispatch()

    def do_DELETE(self) -> None:
        self.dispatch()

    def dispatch(self) -> None:
        url = urlsplit(self.path)
        if self.fault(url.path):
            return
        try:
            if url.path == "/discovery/v1/apis/arvados/v1/rest":
                return self.send_json(200, self.discovery())
            if not url.path.startswith("/arvados/v1/"):
                raise ApiError(404, f"no route for {url.path}")
            if url.path.rstrip("/") == "/arvados/v1/config" and self.command == "GET":
                # Public, as the controller's ConfigGet: no token is checked.
                return self.send_json(200, self.config())
            account = self.emu.accounts.get(self.token() or "")
            if account is None:
                raise ApiError(401, "Not logged in")
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            raw = self.body()
            self.method = self.command
            if self.command == "POST":
                params, raw = self.method_override(params, raw)
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise ApiError(400, f"cannot decode the request body as JSON: {exc}") from exc
            parts = [unquote(p) for p in url.path[len("/arvados/v1/") :].strip("/").split("/")]
            with self.emu.lock:
                status, doc = self.route(account, parts, params, body)
            if self.hold:
                time.sleep(self.hold)  # done, but the answer is late
            self.send_json(status, doc)
        except ApiError as exc:
            # As ApplicationController#send_error: the request ID after each message.
            request_id = self.headers.get("X-Request-Id")
            errors = [f"{m} ({request_id})" if request_id else m for m in exc.errors]
            token = f"{int(time.time())}+{secrets.token_hex(4)}"
            self.send_json(exc.status, {"errors": errors, "error_token": token})

    # ---- method override (lib/controller/router/router.go ServeHTTP) --------------------

    def is_form(self) -> bool:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return content_type == "application/x-www-form-urlencoded"

    def method_override(self, params: dict[str, str], raw: bytes) -> tuple[dict[str, str], bytes]:
        """A POST's form body fields join the query's, and ``_method`` (query or form)
        or else ``X-Http-Method-Override`` names the method to route as.

        googleapiclient resends any GET whose URL exceeds 2048 characters this way.
        The controller parses the form (``r.ParseForm``), then takes ``_method``
        from it, else the header.  Returns the parameters and the body left to decode.
        """
        merged = dict(params)
        if self.is_form():
            try:
                form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError as exc:
                raise ApiError(400, f"cannot decode the form body: {exc}") from exc
            merged.update({k: v[0] for k, v in form.items()})  # the body's values win
            raw = b""
        override = merged.pop("_method", "") or self.headers.get("X-Http-Method-Override", "")
        if override:
            self.method = override.upper()
        return merged, raw

    def discovery(self) -> dict[str, Any]:
        doc = json.loads(DISCOVERY.read_text())
        root = f"https://{self.emu.api_host}/"
        doc.update(
            {
                "rootUrl": root,
                "baseUrl": root + "arvados/v1/",
                "servicePath": "arvados/v1/",
                "uuidPrefix": self.emu.uuid_prefix,
                "defaultCollectionReplication": self.emu.default_replication,
                "blobSignatureTtl": self.emu.blob_signature_ttl,
                "maxRequestSize": 134217728,
                "dockerImageFormats": list(self.emu.docker_image_formats),
            }
        )
        return doc

    # ---- routing -----------------------------------------------------------------------

    def route(
        self, user: UserAccount, parts: list[str], params: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        method = self.method
        resource = parts[0]
        ident = parts[1] if len(parts) > 1 else None
        if resource == "config" and method == "GET":
            return 200, self.config()
        if resource == "keep_services" and ident == "accessible":
            return 200, {
                "kind": "arvados#keepServiceList",
                "items": [
                    {
                        "uuid": f"{self.emu.uuid_prefix}-bi6l4-keepstore{n:06d}",
                        "service_host": "127.0.0.1",
                        "service_port": port,
                        "service_ssl_flag": False,
                        "service_type": "disk",
                        "read_only": False,
                        "kind": "arvados#keepService",
                    }
                    for n, port in enumerate(self.emu.keep_ports)
                ],
                "items_available": len(self.emu.keep_ports),
            }
        if resource == "users" and ident == "current":
            return 200, self.output(user, "users", self.emu.tables["users"][user.uuid], None)
        if resource == "api_client_authorizations" and ident == "current":
            return 200, {
                "uuid": f"{self.emu.uuid_prefix}-gj3su-000000000000000",
                "owner_uuid": user.uuid,
                "api_token": user.token,
                "scopes": ["all"],
            }
        if resource == "groups" and method == "GET" and parts[1:] in (["contents"], ["shared"]):
            return 200, group_listing(self, user, parts[1], params)
        if resource == "groups" and method == "GET" and parts[2:] == ["contents"]:
            return 200, group_listing(self, user, "contents", {**params, "uuid": parts[1]})
        if resource in ("container_requests", "containers"):
            return 200, _route_containers(self, user, method, resource, ident, params, body)
        if resource not in ("users", "groups", "collections", "links"):
            raise ApiError(404, f"no route for {resource}")
        body = body.get(resource[:-1], body) if isinstance(body.get(resource[:-1]), dict) else body
        if ident is None:
            if method == "GET":
                return 200, self.list(user, resource, params)
            if method == "POST":
                return 200, self.create(user, resource, params, body)
        else:
            if method == "GET":
                return 200, self.get(user, resource, ident, params)
            if method in ("PUT", "PATCH"):
                return 200, self.update(user, resource, ident, params, body)
            if method == "DELETE":
                return 200, self.delete(user, resource, ident)
        raise ApiError(404, f"no route for {method} {'/'.join(parts)}")

    def config(self) -> dict[str, Any]:
        return {
            "ClusterID": self.emu.uuid_prefix,
            "StorageClasses": {"default": {"Default": True, "Priority": 0}},
            "Collections": {
                "DefaultReplication": self.emu.default_replication,
                "BlobSigning": True,
                "BlobSigningTTL": f"{self.emu.blob_signature_ttl}s",
            },
            "Containers": {
                "SupportedDockerImageFormats": {f: {} for f in self.emu.docker_image_formats}
            },
            "Services": {"Keepstore": {}},
        }

    # ---- resources ---------------------------------------------------------------------

    def output(
        self, user: UserAccount, table: str, record: dict[str, Any], select: list[str] | None
    ) -> dict[str, Any]:
        out = dict(record)
        if table == "collections" and "manifest_text" in out:
            out["manifest_text"] = self.emu.signed_manifest(out["manifest_text"], user.token)
        if table in ("groups", "users"):
            # ArvadosModel#can_write / #can_manage: current_user.can?(write: self).  For
            # a user record: oneself, an admin, or a permission link granting it.
            level = self.emu.permission(user, record["uuid"])
            out["can_write"] = level >= 2
            out["can_manage"] = level >= 3
        if select:
            out = {k: out.get(k) for k in select}
        return out

    def find(self, user: UserAccount, table: str, ident: str) -> dict[str, Any]:
        record = self.emu.tables[table].get(ident)
        if record is None or not self.emu.visible(user, table, record):
            raise ApiError(404, f"Path not found: {table}/{ident}")
        return record

    def get(
        self, user: UserAccount, table: str, ident: str, params: dict[str, str]
    ) -> dict[str, Any]:
        select = json.loads(params["select"]) if "select" in params else None
        if table == "collections" and _LOCATOR.match(ident):
            pdh = "+".join(ident.split("+")[:2])
            matches = [
                c
                for c in self.emu.tables["collections"].values()
                if c["portable_data_hash"] == pdh and self.emu.visible(user, "collections", c)
            ]
            if not matches:
                raise ApiError(404, f"Path not found: collections/{ident}")
            out = {"uuid": pdh, "portable_data_hash": pdh, "trash_at": None}
            if select is None or "manifest_text" in select:
                out["manifest_text"] = self.emu.signed_manifest(
                    matches[0]["manifest_text"], user.token
                )
            return out
        return self.output(user, table, self.find(user, table, ident), select)

    def list(self, user: UserAccount, table: str, params: dict[str, str]) -> dict[str, Any]:
        filters, select, orders, limit, offset = _list_params(params, self.emu.max_page_size)
        filters = [_with_members(f) for f in filters]
        records = [
            r
            for r in self.emu.tables[table].values()
            if self.emu.visible(user, table, r) and all(_matches(r, f) for f in filters)
        ]
        page = _sorted_records(records, [o.split(".")[-1] for o in orders])[offset : offset + limit]
        if table == "collections" and select is None:
            # CollectionsController#load_select_param: an index omits manifest_text
            # unless the select names it.
            items = [
                self.output(user, table, r, [k for k in r if k != "manifest_text"]) for r in page
            ]
        else:
            items = [self.output(user, table, r, select) for r in page]
        return _page(f"arvados#{table[:-1]}List", params, offset, limit, items, len(records))

    def create(
        self, user: UserAccount, table: str, params: dict[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        if table == "users":
            raise ApiError(403, "Forbidden")
        owner = body.get("owner_uuid") or user.uuid
        uuid = self.emu.new_uuid(table)
        now = _now()
        record: dict[str, Any] = {
            "uuid": uuid,
            "owner_uuid": owner,
            "created_at": now,
            "modified_at": now,
            "modified_by_user_uuid": user.uuid,
            "kind": f"arvados#{table[:-1]}",
            "etag": secrets.token_hex(4),
            "properties": body.get("properties") or {},
        }
        if table == "links":
            for required in ("link_class", "head_uuid"):
                if not body.get(required):
                    raise ApiError(422, f"{required} can't be blank")
            record.update(
                {k: body.get(k) for k in ("link_class", "name", "head_uuid", "tail_uuid")}
            )
            record["name"] = record["name"] or ""
            check_record(table, record)
        elif table == "groups":
            record.update(
                {
                    "name": body.get("name"),
                    "group_class": body.get("group_class", "project"),
                    "description": body.get("description"),
                    "is_trashed": False,
                }
            )
            check_record(table, record)
        else:
            manifest = body.get("manifest_text") or ""
            check_manifest(manifest)
            check_record(table, {"name": body.get("name")})
            self.check_signatures(user, manifest)
            record.update(
                {
                    "name": body.get("name") or f"New collection ({now[:19]})",
                    "description": body.get("description"),
                    "manifest_text": strip_manifest(manifest),
                    "portable_data_hash": pdh_of(manifest),
                    "replication_desired": body.get("replication_desired"),
                    "replication_confirmed": None,
                    "storage_classes_desired": body.get("storage_classes_desired") or ["default"],
                    "is_trashed": False,
                    "trash_at": None,
                    "delete_at": None,
                    "version": 1,
                    "current_version_uuid": uuid,
                    "preserve_version": False,
                }
            )
        self.validate_new(user, table, record)
        if table != "links":
            self.unique_name(table, record, params)
        self.emu.tables[table][record["uuid"]] = record
        return self.output(user, table, record, None)

    def validate_new(self, user: UserAccount, table: str, record: dict[str, Any]) -> None:
        """Validations (422), then the owner check (403), as Rails runs them on create."""
        errors = self.emu.check_foreign_uuids(
            user, record, ["owner_uuid", "tail_uuid", "head_uuid"]
        )
        if table == "links":
            errors += self.link_errors(record)
        if errors:
            raise ApiError(422, *errors)
        if table == "links" and record.get("link_class") == "permission":
            # Link#ensure_owner_uuid_is_permitted: manage the head; owned by the system user
            if self.emu.permission(user, record["head_uuid"]) < 3:
                raise ApiError(
                    403,
                    "#<ArvadosModel::PermissionDeniedError: ArvadosModel::PermissionDeniedError>",
                )
            record["owner_uuid"] = self.emu.system_user
            return
        self.emu.check_owner(user, record["owner_uuid"])

    def link_errors(self, record: dict[str, Any]) -> list[str]:
        """link.rb's own validations: no name links; a permission link names a level
        and grants it to a user (roles are not modelled)."""
        if record.get("link_class") == "name":
            return ["Name Name links are obsolete"]
        if record.get("link_class") != "permission":
            return []
        if record.get("name") not in ("can_read", "can_write", "can_manage", "can_login"):
            return [
                "Name is invalid permission, must be one of 'can_read', 'can_write', "
                "'can_manage', 'can_login'"
            ]
        tail = str(record.get("tail_uuid"))
        if "-j7d0g-" in tail:
            group = self.emu.tables["groups"].get(tail)
            if group is None:
                return ["Tail uuid does not exist"]
            if group.get("group_class") != "role":
                return [
                    "Tail uuid must be a user or role, was group with group_class "
                    f"{group.get('group_class')}"
                ]
        elif "-tpzed-" not in tail:
            return ["Tail uuid must be a user or role"]
        return []

    def unique_name(self, table: str, record: dict[str, Any], params: dict[str, str]) -> None:
        clash = any(
            r["owner_uuid"] == record["owner_uuid"]
            and r["name"] == record["name"]
            and not r.get("is_trashed")
            and r["uuid"] != record["uuid"]
            for r in self.emu.tables[table].values()
        )
        if not clash:
            return
        if params.get("ensure_unique_name") in ("true", "True", "1"):
            record["name"] = f"{record['name'][:237]} ({record['uuid'][-15:]})"
            return
        # ApplicationController#render_error: 422 with the exception's #inspect, the
        # PostgreSQL message and its DETAIL line (the unique index excludes trashed
        # collections and old versions, as here).
        raise ApiError(
            422,
            "#<ActiveRecord::RecordNotUnique: PG::UniqueViolation: ERROR:  duplicate "
            f'key value violates unique constraint "index_{table}_on_owner_uuid_and_name"\n'
            f"DETAIL:  Key (owner_uuid, name)=({record['owner_uuid']}, {record['name']}) "
            "already exists.\n>",
        )

    def check_signatures(self, user: UserAccount, manifest: str) -> None:
        if user.is_admin:
            return
        for line in manifest.splitlines():
            for word in line.split()[1:]:
                match = _LOCATOR.match(word)
                if not match:
                    continue
                if match.group(3) and "+A" in match.group(3):
                    if not self.emu.signature_valid(word, user.token):
                        raise ApiError(
                            403, f"Permission denied: invalid signature on {match.group(1)}"
                        )
                elif int(match.group(2)) > 0:
                    raise ApiError(403, f"Permission denied: missing signature on {match.group(1)}")

    def update(
        self,
        user: UserAccount,
        table: str,
        ident: str,
        params: dict[str, str],
        body: dict[str, Any],
    ) -> dict[str, Any]:
        record = self.find(user, table, ident)
        if self.emu.permission(user, ident if table != "links" else record["owner_uuid"]) < 2:
            raise ApiError(403, f"Permission denied: cannot update {ident}")
        changes = dict(body)
        if table == "collections" and "manifest_text" in changes:
            check_manifest(changes["manifest_text"] or "")
        check_record(table, {**record, **changes})
        if table == "collections" and "manifest_text" in changes:
            self.check_signatures(user, changes["manifest_text"])
            changes["portable_data_hash"] = pdh_of(changes["manifest_text"])
            changes["manifest_text"] = strip_manifest(changes["manifest_text"])
        for key in ("uuid", "created_at", "kind"):
            changes.pop(key, None)
        updated = {**record, **changes, "modified_at": _now()}
        self.validate_changes(user, record, updated)
        if table in ("collections", "groups") and ({"name", "owner_uuid"} & changes.keys()):
            # The unique (owner_uuid, name) index; ApplicationController#update never
            # applies ensure_unique_name (only #create does).
            self.unique_name(table, updated, {})
        self.emu.tables[table][ident] = updated
        return self.output(user, table, updated, None)

    def validate_changes(
        self, user: UserAccount, record: dict[str, Any], updated: dict[str, Any]
    ) -> None:
        """On update, changed ``*_uuid`` attributes are checked as on create; a new owner
        needs write permission on the old owner and on the new one."""
        changed = [
            a for a in ("owner_uuid", "tail_uuid", "head_uuid") if updated.get(a) != record.get(a)
        ]
        errors = self.emu.check_foreign_uuids(user, updated, changed)
        if errors:
            raise ApiError(422, *errors)
        if "owner_uuid" in changed:
            self.emu.check_owner(user, record.get("owner_uuid"), "old")
            self.emu.check_owner(user, updated.get("owner_uuid"))

    def delete(self, user: UserAccount, table: str, ident: str) -> dict[str, Any]:
        record = self.find(user, table, ident)
        if self.emu.permission(user, ident if table != "links" else record["owner_uuid"]) < 2:
            raise ApiError(403, f"Permission denied: cannot delete {ident}")
        if table in ("collections", "groups"):
            record["is_trashed"] = True
            record["trash_at"] = _now()
        else:
            del self.emu.tables[table][ident]
        return self.output(user, table, record, None)


# ---- what the server refuses with 422 ---------------------------------------------------

# services/api/db/structure.sql: these columns are ``character varying(255)``.
_VARCHAR_255 = {
    "collections": ("name", "owner_uuid"),
    "groups": ("name", "owner_uuid", "group_class"),
    "links": ("name", "link_class", "head_uuid", "tail_uuid", "owner_uuid"),
}
VALUE_TOO_LONG = (
    "#<ActiveRecord::ValueTooLong: PG::StringDataRightTruncation: ERROR:  "
    "value too long for type character varying(255)\n>"
)


def check_record(table: str, record: dict[str, Any]) -> None:
    """Validations, then the database's column lengths, as a save on the server runs them."""
    name = record.get("name")
    if table == "collections" or (
        table == "groups" and record.get("group_class") in ("project", "filter")
    ):
        # ArvadosModel#ensure_filesystem_compatible_name, ForwardSlashNameSubstitution "".
        if name in (".", ".."):
            raise ApiError(422, "Name cannot be '.' or '..'")
        if isinstance(name, str) and "/" in name:
            raise ApiError(422, "Name cannot contain a '/' character")
    for column in _VARCHAR_255.get(table, ()):
        value = record.get(column)
        if isinstance(value, str) and len(value) > 255:
            raise ApiError(422, VALUE_TOO_LONG)


# sdk/ruby/lib/arvados/keep.rb, Keep::Manifest.validate!.  Ruby's ^ and $ match at line
# breaks (an escaped \012 puts one inside a name), hence re.M and re.search for =~.
_RB_LOCATOR = re.compile(r"^([0-9a-fA-F]{32})(\+([0-9]+))?((\+([A-Z][A-Za-z0-9@_-]*))+)?\Z", re.M)
_RB_STREAM_TOKEN = re.compile(r"^([^\000-\040\\]|\\[0-3][0-7][0-7])+$", re.M)
_RB_STREAM_NAME = re.compile(r"^(\.)(\/[^\/]+)*$", re.M)
_RB_DOT_SEGMENT = re.compile(r"\/\.\.?(\/|$)", re.M)
_RB_EMPTY_DIR = re.compile(r"^0:0:\.$", re.M)
_RB_FILE_TOKEN = re.compile(r"^[0-9]+:[0-9]+:([^\000-\040\\]|\\[0-3][0-7][0-7])+$", re.M)
_RB_FILE_NAME = re.compile(r"^[0-9]+:[0-9]+:([^\/]+(\/[^\/]+)*)$", re.M)
_RB_NON_8BIT = re.compile(r"[^\\]\\[4-7][0-7][0-7]")


def _rb_unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) == "\\":
            return "\\"
        value = int(match.group(1), 8)
        if value > 255:  # Integer#chr: a RangeError, which the controller answers with 422
            raise ApiError(422, f"#<RangeError: {value} out of char range>")
        return chr(value)

    return re.sub(r"\\(\\|[0-7]{3})", one, text)


def _rb_inspect(word: str | None) -> str:
    if word is None:
        return ""
    return json.dumps(word, ensure_ascii=False)


def _valid_file_token(word: str) -> bool:
    if _RB_EMPTY_DIR.search(_rb_unescape(word)):
        return True
    if not _RB_FILE_TOKEN.search(word):
        return False
    match = _RB_FILE_NAME.search(_rb_unescape(word))
    return match is not None and not {"..", "."} & set(match.group(1).split("/"))


def manifest_problem(manifest: str) -> str | None:
    """``Keep::Manifest.validate!``'s message for *manifest*, or None when it is valid.

    Raises:
        ApiError: an escape over \\377, where Ruby's unescape itself fails.
    """
    if manifest == "":
        return None
    if not manifest.endswith("\n"):
        return "Invalid manifest: does not end with newline"
    for number, body in enumerate(manifest[:-1].split("\n"), 1):
        words: list[str | None] = list(body.split(" "))
        while words and words[-1] == "":
            words.pop()  # Ruby's split drops trailing empty fields
        what = f"Manifest invalid for stream {number}"
        if not words:
            return f"{what}: missing stream name"
        word = words.pop(0)
        assert word is not None
        if _RB_NON_8BIT.search(word):
            return f"{what}: >8-bit encoded chars not allowed on stream token {_rb_inspect(word)}"
        unescaped = _rb_unescape(word)
        if not (
            _RB_STREAM_TOKEN.search(word)
            and _RB_STREAM_NAME.search(unescaped)
            and not _RB_DOT_SEGMENT.search(unescaped)
        ):
            return f"{what}: missing or invalid stream name {_rb_inspect(word)}"
        word = words.pop(0) if words else None
        count = 0
        while word is not None and _RB_LOCATOR.search(word):
            word = words.pop(0) if words else None
            count += 1
        if count == 0:
            return f"{what}: missing or invalid locator {_rb_inspect(word)}"
        if word is not None and _RB_NON_8BIT.search(word):
            return f"{what}: >8-bit encoded chars not allowed on file token {_rb_inspect(word)}"
        count = 0
        while word is not None and _valid_file_token(word):
            word = words.pop(0) if words else None
            count += 1
        if word is not None:
            return f"{what}: invalid file token {_rb_inspect(word)}"
        if count == 0:
            return f"{what}: no file tokens"
        if body.endswith(" "):
            return f"{what}: trailing space"
    return None


def check_manifest(manifest: str) -> None:
    """422 ``Manifest text …`` where the server's ``check_manifest_validity`` refuses."""
    problem = manifest_problem(manifest)
    if problem is not None:
        raise ApiError(422, f"Manifest text {problem}")


# ---- the server's Docker image lookup and container requests ------------------------------
#
# Ported from services/api: Collection.find_all_for_docker_image and
# get_compatible_images (collection.rb), Container.resolve_container_image (container.rb),
# and the parts of ContainerRequest (container_request.rb) that decide whether a request
# is accepted and which image its container runs.  Keep::Manifest and Keep::Locator are
# ported from sdk/ruby/lib/arvados/keep.rb as far as the lookup uses them.

# Ruby's ^ starts any line (\z, here \Z, ends the text): a search term's last line may be it.
_RUBY_LOCATOR = re.compile(
    r"^([0-9a-fA-F]{32})(\+([0-9]+))?((\+([A-Z][A-Za-z0-9@_-]*))+)?\Z", re.MULTILINE
)


class UnresolvableContainerError(ApiError):
    """``ArvadosModel::UnresolvableContainerError`` (422), rendered as Rails does:
    the exception's ``inspect``."""

    def __init__(self, message: str) -> None:
        super().__init__(422, f"#<ArvadosModel::UnresolvableContainerError: {message}>")


def _ruby_unescape(text: str) -> str:
    """``Keep::Manifest.unescape``: ``\\\\`` and ``\\ooo`` octal escapes."""
    return re.sub(
        r"\\(\\|[0-7]{3})", lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1), 8)), text
    )


def manifest_file_specs(manifest: str) -> Iterator[tuple[str, int, str]]:
    """``Keep::Manifest#each_file_spec``: (stream, size, name) per file token, a name's
    directories moved into the stream."""
    for line in manifest.splitlines():
        stream: str | None = None
        in_files = False
        for token in line.split():
            if stream is None:
                stream = _ruby_unescape(token)
            elif in_files or not _RUBY_LOCATOR.match(token):
                in_files = True
                parts = token.split(":", 2)
                if len(parts) < 3:
                    raise ApiError(422, f"Invalid file token '{token}'")
                size, name = int(parts[1] or 0), _ruby_unescape(parts[2])
                where = stream
                if "/" in name:
                    folder, _, name = name.rpartition("/")
                    where = f"{stream}/{folder}"
                yield where, size, name


def manifest_files(manifest: str) -> list[tuple[str, str, int]]:
    """``Keep::Manifest#files``: (stream, name, total size), first appearance first."""
    sizes: dict[tuple[str, str], int] = {}
    for stream, size, name in manifest_file_specs(manifest):
        sizes[(stream, name)] = sizes.get((stream, name), 0) + size
    return [(stream, name, size) for (stream, name), size in sizes.items()]


def manifest_exactly_one_file(manifest: str) -> bool:
    """``Keep::Manifest#exact_file_count?(1)``: empty ``.`` placeholders do not count."""
    seen: set[tuple[str, str]] = set()
    for stream, size, name in manifest_file_specs(manifest):
        if name == "." and size == 0:
            continue
        seen.add((stream, name))
        if len(seen) >= 2:
            return False
    return len(seen) == 1


def docker_image_pattern(formats: list[str]) -> re.Pattern[str]:
    """The file name an image collection must hold for the cluster's
    ``Containers.SupportedDockerImageFormats`` (``=~``: Ruby's ``^``/``$`` match at
    each line, so one line of a name that holds a newline may fit)."""
    if "v1" in formats and "v2" in formats:
        return re.compile(r"^(sha256:)?[0-9A-Fa-f]{64}\.tar$", re.MULTILINE)
    if "v2" in formats:
        return re.compile(r"^(sha256:)[0-9A-Fa-f]{64}\.tar$", re.MULTILINE)
    if "v1" in formats:
        return re.compile(r"^[0-9A-Fa-f]{64}\.tar$", re.MULTILINE)
    raise ApiError(
        422, f"#<RuntimeError: Unrecognized configuration for docker_image_formats {formats}>"
    )


def _to_epoch(value: Any) -> int | None:
    """Ruby's ``value.to_datetime.to_i`` (whole seconds), None where it would raise."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() // 1)


def _compatible_images(
    emu: Emulator, user: UserAccount, pattern: re.Pattern[str], collections: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``Collection.get_compatible_images``: each collection if it holds exactly one file
    whose name fits *pattern*, else the target of its ``docker_image_migration`` link
    (owned by the system user, latest wins) if that one does."""
    if not collections:
        return []
    pdhs = {c["portable_data_hash"] for c in collections}
    migrations: dict[str, str] = {}
    for link in sorted(emu.tables["links"].values(), key=lambda r: r["created_at"]):
        if (
            link.get("tail_uuid") in pdhs
            and link["link_class"] == "docker_image_migration"
            and link["owner_uuid"] == emu.system_user
        ):
            migrations[link["tail_uuid"]] = link["head_uuid"]
    migrated = {
        c["portable_data_hash"]: c
        for c in emu.tables["collections"].values()
        if c["portable_data_hash"] in migrations.values() and emu.visible(user, "collections", c)
    }

    def fits(collection: dict[str, Any]) -> bool:
        manifest = collection["manifest_text"]
        return manifest_exactly_one_file(manifest) and bool(
            pattern.search(manifest_files(manifest)[0][1])
        )

    out = []
    for collection in collections:
        if fits(collection):
            out.append(collection)
        else:
            target = migrated.get(migrations.get(collection["portable_data_hash"], ""))
            if target is not None and fits(target):
                out.append(target)
    return out


def find_all_for_docker_image(
    emu: Emulator, user: UserAccount, search_term: str, search_tag: str | None = None
) -> list[dict[str, Any]]:
    """``Collection.find_all_for_docker_image``: the collections a container image
    reference resolves to, the one the server would run first.

    A PDH names that collection.  Otherwise ``repo:tag`` (``latest`` by default) is
    matched exactly against ``docker_image_repo+tag`` links, and only if none match, the
    term as a prefix (SQL ``LIKE``) of ``docker_image_hash`` link names.  Links and
    collections must be readable and not in the trash.  Order: newest
    ``image_timestamp`` first (none counts as 0), then newest link, both in whole
    seconds, taken from each collection's oldest matching link.  Collections that do
    not fit the cluster's image formats are dropped (or replaced through a migration
    link); if that drops every match: "incompatible" (422).
    """
    pattern = docker_image_pattern(emu.docker_image_formats)
    locator = _RUBY_LOCATOR.search(search_term)
    if locator:
        pdh = locator.group(1) + (f"+{locator.group(3)}" if locator.group(3) else "")
        found = [
            c
            for c in emu.tables["collections"].values()
            if c["portable_data_hash"] == pdh and emu.visible(user, "collections", c)
        ][:1]
        return _compatible_images(emu, user, pattern, found)
    if search_tag is None and ":" in search_term:
        search_term, _, search_tag = search_term.partition(":")

    def search(link_class: str, test: Any) -> list[dict[str, Any]]:
        links = [
            link
            for link in emu.tables["links"].values()
            if link["link_class"] == link_class
            and test(link.get("name") or "")
            and emu.visible(user, "links", link)
            and (head := emu.tables["collections"].get(link["head_uuid"])) is not None
            and emu.visible(user, "collections", head)
        ]
        return sorted(links, key=lambda r: r["created_at"], reverse=True)

    wanted = f"{search_term}:{search_tag or 'latest'}"
    matches = search("docker_image_repo+tag", lambda name: name == wanted)
    if not matches:
        matches = search(
            "docker_image_hash", lambda name: _like(f"{search_term}%", name, ignore_case=False)
        )
    keys: dict[str, tuple[int, int]] = {}
    for link in matches:  # newest link first: the oldest one's values stay
        stamp = _to_epoch((link.get("properties") or {}).get("image_timestamp"))
        keys[link["head_uuid"]] = (-(stamp or 0), -(_to_epoch(link["created_at"]) or 0))
    ordered = sorted(
        (c for c in emu.tables["collections"].values() if c["uuid"] in keys),
        key=lambda c: keys[c["uuid"]],
    )
    compatible = _compatible_images(emu, user, pattern, ordered)
    if ordered and not compatible:
        raise UnresolvableContainerError(
            "Matching Docker image is incompatible with 'docker_image_formats' configuration."
        )
    return compatible


def resolve_container_image(emu: Emulator, user: UserAccount, container_image: str) -> str:
    """``Container.resolve_container_image``: the PDH of the image the server would run."""
    found = find_all_for_docker_image(emu, user, container_image)
    if not found:
        raise UnresolvableContainerError(f"docker image {json.dumps(container_image)} not found")
    return str(found[0]["portable_data_hash"])


def _container_request_create(
    handler: _ApiHandler, user: UserAccount, body: dict[str, Any]
) -> dict[str, Any]:
    """``ContainerRequest`` create: defaults, the validations that decide acceptance,
    then (state ``Committed``) ``set_container``: the image is resolved as the
    requesting user and a ``Queued`` container records the image's PDH.

    Not modelled: container reuse (``find_reusable``; every commit makes a new
    container), collection mounts' resolution, runtime tokens, scheduling checks.
    """
    emu = handler.emu
    now = _now()
    uuid = emu.new_uuid("container_requests")
    record: dict[str, Any] = {
        "uuid": uuid,
        "owner_uuid": body.get("owner_uuid") or user.uuid,
        "created_at": now,
        "modified_at": now,
        "modified_by_user_uuid": user.uuid,
        "kind": "arvados#containerRequest",
        "etag": secrets.token_hex(4),
        "name": body.get("name"),
        "description": body.get("description"),
        "properties": body.get("properties") or {},
        "command": body.get("command"),
        "container_image": body.get("container_image"),
        "output_path": body.get("output_path"),
        "cwd": body.get("cwd") or ".",  # fill_field_defaults
        "state": body.get("state") or "Uncommitted",
        "environment": body.get("environment") or {},
        "runtime_constraints": body.get("runtime_constraints") or {},
        "mounts": body.get("mounts") or {},
        "scheduling_parameters": body.get("scheduling_parameters") or {},
        "priority": body.get("priority") or 0,
        "use_existing": body.get("use_existing", True),
        "output_glob": body.get("output_glob") or [],
        "output_name": body.get("output_name"),
        "container_uuid": None,
        "container_count": 0,
    }
    errors = [
        f"{label} can't be blank"
        for label, attribute in (
            ("Command", "command"),
            ("Container image", "container_image"),
            ("Output path", "output_path"),
            ("Cwd", "cwd"),
        )
        if not record[attribute]
    ]
    if record["state"] not in ("Uncommitted", "Committed"):
        errors.append(f"State cannot change from  to {record['state']}")
    if record["state"] == "Committed":
        for key in ("vcpus", "ram"):
            value = record["runtime_constraints"].get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                shown = "nil" if value is None else json.dumps(value)
                errors.append(f"Runtime constraints [{key}]={shown} must be a positive integer")
    if record["output_path"] not in record["mounts"]:
        errors.append("Output path must be a mount target")
    errors += emu.check_foreign_uuids(user, record, ["owner_uuid"])
    if errors:
        raise ApiError(422, *errors)
    image_pdh = None
    if record["state"] == "Committed":
        image_pdh = resolve_container_image(emu, user, str(record["container_image"]))
    emu.check_owner(user, record["owner_uuid"])
    if image_pdh is not None:
        container_uuid = emu.new_uuid("containers")
        emu.tables["containers"][container_uuid] = {
            "uuid": container_uuid,
            "owner_uuid": emu.system_user,
            "created_at": now,
            "modified_at": now,
            "kind": "arvados#container",
            "state": "Queued",
            "container_image": image_pdh,
            "command": record["command"],
            "cwd": record["cwd"],
            "environment": record["environment"],
            "output_path": record["output_path"],
            "mounts": record["mounts"],
            "runtime_constraints": record["runtime_constraints"],
            "priority": record["priority"],
            "runtime_user_uuid": user.uuid,
        }
        record["container_uuid"] = container_uuid
        record["container_count"] = 1
    emu.tables["container_requests"][uuid] = record
    return record


def _route_containers(
    handler: _ApiHandler,
    user: UserAccount,
    method: str,
    resource: str,
    ident: str | None,
    params: dict[str, str],
    body: dict[str, Any],
) -> Any:
    """``container_requests`` create/get/list and ``containers`` get/list."""
    inner = body.get(resource[:-1])
    body = inner if isinstance(inner, dict) else body
    emu = handler.emu
    if resource == "container_requests" and ident is None and method == "POST":
        return _container_request_create(handler, user, body)
    if method == "GET" and ident is None:
        return handler.list(user, resource, params)
    if method == "GET" and ident is not None:
        record = emu.tables[resource].get(ident)
        if record is not None and resource == "containers" and not user.is_admin:
            # Container.readable_by: through a container request the user can read
            requests = emu.tables["container_requests"].values()
            if not any(
                r["container_uuid"] == ident and emu.visible(user, "container_requests", r)
                for r in requests
            ):
                record = None
        elif record is not None and not emu.visible(user, resource, record):
            record = None
        if record is None:
            raise ApiError(404, "Path not found")
        return dict(record)
    raise ApiError(404, f"no route for {method} {resource} in the emulator")


def _like(pattern: str, value: str, *, ignore_case: bool) -> bool:
    """PostgreSQL's ``LIKE`` / ``ILIKE``: ``%`` and ``_`` wildcards, ``\\`` (the default
    ``ESCAPE``) makes the next character literal; a pattern ending in it is an error."""
    parts = []
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            literal = next(chars, None)
            if literal is None:
                raise ApiError(
                    422,
                    "#<ActiveRecord::StatementInvalid: PG::InvalidEscapeSequence: ERROR:  "
                    "LIKE pattern must not end with escape character\n>",
                )
            parts.append(re.escape(literal))
        else:
            parts.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
    regex = "".join(parts)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


class _Members:
    """An ``in`` / ``not in`` operand list, tested through a set where it can be.

    ``value in list`` compares with every element: a 10,000-UUID filter checked
    against every record would time the emulator, not its client.  JSON scalars
    that are equal hash equal, so the answer is the list's; unhashable values
    (or operands holding them) fall back to the list.
    """

    __slots__ = ("hashed", "items")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        try:
            self.hashed: frozenset[Any] | None = frozenset(items)
        except TypeError:
            self.hashed = None

    def __contains__(self, value: Any) -> bool:
        if self.hashed is not None:
            try:
                return value in self.hashed
            except TypeError:
                pass
        return value in self.items


def _with_members(spec: Any) -> Any:
    """*spec* with a list operand of ``in`` / ``not in`` as :class:`_Members`."""
    if (
        isinstance(spec, list)
        and len(spec) == 3
        and isinstance(spec[1], str)
        and spec[1].lower() in ("in", "not in")
        and isinstance(spec[2], list)
    ):
        return [spec[0], spec[1], _Members(spec[2])]
    return spec


# services/api/db/structure.sql: the jsonb columns of the tables the emulator stores
# (record_filters.rb: only these take ``column.key`` subproperty filters and ``exists``).
_JSONB = frozenset(
    (
        *("properties", "storage_classes_desired", "storage_classes_confirmed"),
        *("secret_mounts", "output_storage_classes", "output_properties", "published_ports"),
        *("runtime_status", "runtime_auth_scopes"),
    )
)


def _ruby_class(value: Any) -> str:
    """The Ruby class a JSON value parses to, as error messages name it."""
    if isinstance(value, bool):
        return "TrueClass" if value else "FalseClass"
    for kind, name in ((str, "String"), (int, "Integer"), (float, "Float"), (dict, "Hash")):
        if isinstance(value, kind):
            return name
    return "NilClass" if value is None else type(value).__name__


def _matches(record: dict[str, Any], spec: list[Any]) -> bool:
    if isinstance(spec, str):
        raise ApiError(422, "full text search is not supported by the emulator")
    attribute, operator, operand = spec
    op = operator.lower()
    column, dot, key = attribute.partition(".")
    if dot:  # a subproperty: record_filters.rb allows it on jsonb columns only
        if column not in _JSONB or column not in record:
            raise ApiError(422, f"Invalid attribute '{column}' for subproperty filter")
        if key.startswith("<") and key.endswith(">"):
            key = key[1:-1]
        document = record.get(column) or {}
        value = document.get(key)
        if op == "exists":  # the key is there (even holding null), or (false) is not
            if not isinstance(operand, bool):
                raise ApiError(
                    422, f"Invalid operand '{operand}' for 'exists' must be true or false"
                )
            return (key in document) == operand
    elif attribute in record:
        value = record[attribute]
        if op == "exists":  # [column, "exists", key]: jsonb_exists(column, key)
            if column not in _JSONB:
                raise ApiError(
                    422, f"Invalid attribute '{attribute}' for operator 'exists' in filter"
                )
            return isinstance(value, dict) and operand in value
    else:
        raise ApiError(422, f"Invalid attribute '{attribute}' for operator '{operator}' in filter")
    if op in ("in", "not in") and not isinstance(operand, (list, _Members)):
        raise ApiError(
            422, f"Invalid operand type '{_ruby_class(operand)}' for '{op}' operator in filters"
        )
    if op == "=":
        return bool(value == operand)
    if op == "!=":
        return bool(value != operand)
    if op == "in":
        return value in operand
    if op == "not in":
        return value not in operand
    if op in ("like", "ilike"):
        if not isinstance(operand, str):
            raise ApiError(
                422, f"Invalid operand type '{_ruby_class(operand)}' for '{op}' operator in filters"
            )
        return isinstance(value, str) and _like(operand, value, ignore_case=op == "ilike")
    if op in ("<", "<=", ">", ">="):
        if value is None:
            return False
        return {
            "<": value < operand,
            "<=": value <= operand,
            ">": value > operand,
            ">=": value >= operand,
        }[op]
    if op == "is_a":
        return _is_a(value, operand)
    raise ApiError(422, f"Invalid operator '{operator}'")


# ---- groups.contents and groups.shared: what arv-mount lists directories with ---------------
#
# Ported from services/api/app/controllers/arvados/v1/groups_controller.rb (#contents,
# #shared, #exclude_home) and lib/record_filters.rb ('is_a').  Of the four kinds `contents`
# searches (Group, ContainerRequest, Workflow, Collection) the emulator stores groups and
# collections, so the other two contribute nothing.

# ArvadosModel::kind_class -> uuid infix, for the 'is_a' operator.
_KIND_INFIX = {
    "arvados#user": "tpzed",
    "arvados#group": "j7d0g",
    "arvados#collection": "4zz18",
    "arvados#link": "o0j2j",
    "arvados#containerRequest": "xvhdp",
    "arvados#container": "dz642",
    "arvados#workflow": "7fd4e",
}
# The tables `contents` searches, in the server's order; a qualified filter or order may
# name any of them (or `container.` / `collection.`), anything else is a 422.
_CONTENTS_TABLES = ("groups", "container_requests", "workflows", "collections")
_LISTED_GROUP_CLASSES = ("project", "filter")
# Group.selectable_attributes + Collection.selectable_attributes, as far as the emulator
# stores them (a select naming a column of no searched kind is a 422).
_SELECTABLE = {
    *("uuid", "owner_uuid", "created_at", "modified_at", "modified_by_user_uuid", "kind"),
    *("etag", "name", "description", "properties", "is_trashed", "trash_at", "delete_at"),
    *("group_class", "can_write", "can_manage", "writable_by", "frozen_by_uuid"),
    *("portable_data_hash", "manifest_text", "replication_desired", "replication_confirmed"),
    *("storage_classes_desired", "storage_classes_confirmed", "version"),
    *("current_version_uuid", "preserve_version", "file_count", "file_size_total"),
}


def _is_a(value: Any, operand: Any) -> bool:
    """``[attr, "is_a", kind(s)]``: the uuid in *attr* is of that kind (unknown kinds: never)."""
    kinds = operand if isinstance(operand, list) else [operand]
    return isinstance(value, str) and any(
        kind in _KIND_INFIX and value[6:11] == _KIND_INFIX[kind] for kind in kinds
    )


def _list_params(
    params: dict[str, str], max_page_size: int
) -> tuple[list[Any], list[str] | None, list[str], int, int]:
    """filters, select, orders, limit and offset as load_param.rb reads them."""
    filters = json.loads(params.get("filters") or "[]")
    select = json.loads(params["select"]) if params.get("select") else None
    order = params.get("order") or ""
    orders = json.loads(order) if order.startswith("[") else order.split(",") if order else []
    for name in ("limit", "offset"):
        if name in params and not params[name].isdigit():
            raise ApiError(422, f"Invalid value for {name} parameter")
    limit = min(int(params.get("limit", 100)), max_page_size)
    return filters, select, [o.strip() for o in orders], limit, int(params.get("offset", 0))


def _page(
    kind: str,
    params: dict[str, str],
    offset: int,
    limit: int,
    items: list[dict[str, Any]],
    available: int,
) -> dict[str, Any]:
    """A list answer; ``items_available`` unless ``count=none``."""
    doc: dict[str, Any] = {
        "kind": kind,
        "etag": "",
        "self_link": "",
        "offset": offset,
        "limit": limit,
        "items": items,
    }
    if params.get("count", "exact") != "none":
        doc["items_available"] = available
    return doc


def _include_param(params: dict[str, str]) -> set[str]:
    """groups_controller#load_include_param: a string, or a JSON array of strings."""
    value = params.get("include") or ""
    if value.startswith("["):
        return set(json.loads(value))
    return {value} if value else set()


def _for_table(specs: list[Any], table: str) -> list[Any]:
    """Filters (lists) or orders (strings) that apply to *table*, table names removed.

    Unqualified ones apply to every table; ``table.column`` ones only to that table.
    """
    out: list[Any] = []
    for spec in specs:
        column = spec[0] if isinstance(spec, list) else spec.split(" ")[0]
        if "." not in column or column.startswith("properties."):
            out.append(spec)
        elif column.split(".", 1)[0] == table:
            rest = column.split(".", 1)[1]
            out.append([rest, *spec[1:]] if isinstance(spec, list) else spec.split(".", 1)[1])
    return out


def _sorted_records(records: list[dict[str, Any]], orders: list[str]) -> list[dict[str, Any]]:
    for spec in reversed(orders or ["modified_at desc", "uuid desc"]):
        column, _, direction = spec.strip().partition(" ")
        records.sort(
            key=lambda r: (r.get(column) is None, r.get(column) or ""),
            reverse=direction.strip().lower() == "desc",
        )
    return records


def _visible(emu: Emulator, user: UserAccount, table: str, record: dict[str, Any]) -> bool:
    """readable_by without include_trash: readable, not trashed, not inside a trashed project."""
    if record.get("is_trashed") or not emu.readable(user, table, record):
        return False
    return not any(
        emu.tables["groups"].get(ancestor, {}).get("is_trashed")
        for ancestor in emu._owner_chain(record["owner_uuid"])
    )


def _outside_home(emu: Emulator, user: UserAccount, record: dict[str, Any]) -> bool:
    """groups_controller#exclude_home: owned by another user, by something this user cannot
    read, or by a group that is not a project."""
    owner = record["owner_uuid"]
    if owner in emu.tables["users"] and owner != user.uuid:
        return True
    if not user.is_admin and emu.permission(user, owner) < 1:
        return True
    owner_group = emu.tables["groups"].get(owner)
    return owner_group is not None and owner_group.get("group_class") != "project"


def _owners_included(
    api: _ApiHandler, user: UserAccount, items: list[dict[str, Any]], select: list[str] | None
) -> list[dict[str, Any]]:
    """include=owner_uuid: the readable groups and users owning *items*."""
    owners = {item.get("owner_uuid") for item in items}
    included = []
    for table in ("groups", "users"):
        for uuid in sorted(o for o in owners if o in api.emu.tables[table]):
            record = api.emu.tables[table][uuid]
            if _visible(api.emu, user, table, record):
                keep = [k for k in select if k in record] if select else None
                included.append(api.output(user, table, record, keep))
    return included


def group_listing(
    api: _ApiHandler, user: UserAccount, action: str, params: dict[str, str]
) -> dict[str, Any]:
    """``GET groups/contents`` (or ``groups/<uuid>/contents``) and ``GET groups/shared``."""
    emu = api.emu
    filters, select, orders, limit, offset = _list_params(params, emu.max_page_size)
    include = _include_param(params)
    for spec in filters:
        if not isinstance(spec, list) or len(spec) != 3:
            raise ApiError(422, f"Invalid element in filters array: {spec!r}")
    if action == "shared":
        records = [
            r
            for r in emu.tables["groups"].values()
            if _visible(emu, user, "groups", r)
            and _outside_home(emu, user, r)
            and all(_matches(r, f) for f in _for_table(filters, "groups"))
        ]
        page = _sorted_records(records, _for_table(orders, "groups"))[offset : offset + limit]
        items = [api.output(user, "groups", r, select) for r in page]
        doc = _page("arvados#groupList", params, offset, limit, items, len(records))
        if "owner_uuid" in include:
            doc["included"] = _owners_included(api, user, page, select)
        return doc
    return _contents(api, user, params, filters, select, orders, limit, offset, include)


def _contents(
    api: _ApiHandler,
    user: UserAccount,
    params: dict[str, str],
    filters: list[Any],
    select: list[str] | None,
    orders: list[str],
    limit: int,
    offset: int,
    include: set[str],
) -> dict[str, Any]:
    emu = api.emu
    truthy = ("true", "True", "1")
    owners: list[str] | None = None
    uuid = params.get("uuid") or ""
    if uuid:
        group = emu.tables["groups"].get(uuid)
        readable_group = group is not None and _visible(emu, user, "groups", group)
        if not readable_group and uuid not in emu.tables["users"]:  # users: home projects
            raise ApiError(404, f"Path not found: groups/{uuid}")
        owners = [uuid]
        if params.get("recursive") in truthy:
            owners += [
                g["uuid"]
                for g in emu.tables["groups"].values()
                if g["uuid"] != uuid and uuid in emu._owner_chain(g["owner_uuid"])
            ]
        if params.get("exclude_home_project") in truthy:
            raise ApiError(422, "Cannot use 'exclude_home_project' with a parent object")
    for spec in filters:
        table = spec[0].split(".", 1)[0] if "." in spec[0] else None
        if table and table not in (*_CONTENTS_TABLES, "container", "collection", "properties"):
            raise ApiError(422, f"Invalid attribute '{spec[0]}' in filter")
    wanted = {
        kind
        for spec in filters
        if spec[1].lower() == "is_a"
        for kind in (spec[2] if isinstance(spec[2], list) else [spec[2]])
    }
    for column in select or []:
        if column not in _SELECTABLE:
            raise ApiError(422, f"Invalid attribute '{column}' in select")
    found: list[tuple[str, dict[str, Any]]] = []
    errors = []
    for table, kind in (("groups", "arvados#group"), ("collections", "arvados#collection")):
        if wanted and kind not in wanted:
            continue
        table_filters = _for_table(filters, table)
        try:
            records = [
                r
                for r in emu.tables[table].values()
                if _visible(emu, user, table, r)
                and (owners is None or r["owner_uuid"] in owners)
                and (table != "groups" or r.get("group_class") in _LISTED_GROUP_CLASSES)
                and (
                    table != "collections"
                    or params.get("include_old_versions") in truthy
                    or r.get("current_version_uuid", r["uuid"]) == r["uuid"]
                )
                and (
                    params.get("exclude_home_project") not in truthy or _outside_home(emu, user, r)
                )
                and all(_matches(r, f) for f in table_filters)
            ]
        except ApiError as exc:  # an attribute this kind lacks: skip the kind, as the server does
            if "Invalid attribute" not in exc.message:
                raise
            errors.append(f"{exc.message} on object type {table}")
            continue
        found += [(table, r) for r in _sorted_records(records, _for_table(orders, table))]
    searched = [k for k in ("arvados#group", "arvados#collection") if not wanted or k in wanted]
    if errors and len(errors) == len(searched):  # only when every kind failed
        raise ApiError(422, "\n".join(errors))
    items = []
    for table, record in found[offset : offset + limit]:
        keep = [k for k in select if k in record or table == "groups"] if select else None
        if table == "collections" and keep is None:
            keep = [k for k in record if k != "manifest_text"]
        item = api.output(user, table, record, keep)
        item.pop("manifest_text", None)  # the controller cannot sign it here: never listed
        items.append(item)
    doc = _page("arvados#objectList", params, offset, limit, items, len(found))
    if include:
        included_select = [c for c in select if c != "manifest_text"] if select else None
        doc["included"] = (
            _owners_included(api, user, items, included_select) if "owner_uuid" in include else []
        )
    return doc


def main() -> None:
    """Serve one emulated cluster until stdin closes; print its admin environment as JSON."""
    import sys

    with Emulator() as emulator:
        print(json.dumps(emulator.env()), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
