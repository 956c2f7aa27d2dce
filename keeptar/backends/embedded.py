"""The embedded default backend: a local Keep block store plus a SQLite catalog.

Layout of ``KEEPTAR_HOME`` (default ``$XDG_DATA_HOME/keeptar``)::

    keep/<md5[0:3]>/<md5>   blocks, as keepstore's unix volumes store them
    keep/tmp/               blocks being written (stale ones are removed)
    catalog.sqlite3         collections, links and projects (WAL mode)
    config.json             optional: {"docker_image_formats": ["v2"]}
    writers.lock            shared-locked by every process that writes blocks or
                            collections; ``keeptar gc`` locks it exclusively

Several keeptar processes may use one home at once: blocks are written to a
temporary name and renamed, and catalog changes are SQLite transactions.
A block is on stable storage before it gets its name, and catalog commits
are durable (WAL, ``synchronous=FULL``), so a collection never refers to a
block that a crash could lose.  Block files are written with direct I/O where
the filesystem allows it, while the block is being hashed
(:mod:`keeptar.backends._blockfile`).
UUIDs have Arvados's form with the cluster prefix ``local``; the one local
user is an admin whose home project is their own UUID.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import sqlite3
import string
import threading
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from keeptar.backends._blockfile import write_new_file
from keeptar.backends._protocol import Filters, Record, ServerFacts, User
from keeptar.errors import BackendError, ConflictError, NotFoundError, UsageError
from keeptar.keep.manifest import (
    Locator,
    check_owner_uuid,
    is_portable_data_hash,
    parse_manifest,
    portable_data_hash,
)

__all__ = ["LOCAL_PREFIX", "LOCAL_USER_UUID", "WRITERS_LOCK", "EmbeddedBackend", "default_home"]

LOCAL_PREFIX = "local"
LOCAL_USER_UUID = f"{LOCAL_PREFIX}-tpzed-keeptarlocalusr"
WRITERS_LOCK = "writers.lock"
_ALPHABET = string.ascii_lowercase + string.digits
_TYPES = {"collections": "4zz18", "links": "o0j2j", "groups": "j7d0g"}
_COLUMNS = {
    "collections": (
        "uuid",
        "owner_uuid",
        "name",
        "portable_data_hash",
        "manifest_text",
        "properties",
        "replication_desired",
        "created_at",
        "modified_at",
    ),
    "links": (
        "uuid",
        "owner_uuid",
        "link_class",
        "name",
        "head_uuid",
        "tail_uuid",
        "properties",
        "created_at",
        "modified_at",
    ),
    "groups": ("uuid", "owner_uuid", "name", "group_class", "created_at", "modified_at"),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    uuid TEXT PRIMARY KEY, owner_uuid TEXT NOT NULL, name TEXT NOT NULL,
    portable_data_hash TEXT NOT NULL, manifest_text TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}', replication_desired INTEGER,
    created_at TEXT NOT NULL, modified_at TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS collections_owner_name ON collections (owner_uuid, name);
CREATE INDEX IF NOT EXISTS collections_pdh ON collections (portable_data_hash);
CREATE TABLE IF NOT EXISTS links (
    uuid TEXT PRIMARY KEY, owner_uuid TEXT NOT NULL, link_class TEXT NOT NULL,
    name TEXT NOT NULL, head_uuid TEXT NOT NULL, tail_uuid TEXT,
    properties TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, modified_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS links_class_name ON links (link_class, name);
CREATE INDEX IF NOT EXISTS links_head ON links (head_uuid);
CREATE TABLE IF NOT EXISTS groups (
    uuid TEXT PRIMARY KEY, owner_uuid TEXT NOT NULL, name TEXT NOT NULL,
    group_class TEXT NOT NULL, created_at TEXT NOT NULL, modified_at TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS groups_owner_name ON groups (owner_uuid, name);
"""
_SQL_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def default_home() -> Path:
    """``KEEPTAR_HOME``, else ``$XDG_DATA_HOME/keeptar``, else ``~/.local/share/keeptar``."""
    if os.environ.get("KEEPTAR_HOME"):
        return Path(os.environ["KEEPTAR_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "keeptar"


def _now() -> str:
    # Arvados writes nanoseconds; Python has microseconds, so pad as the API server does.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _new_uuid(table: str) -> str:
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(15))
    return f"{LOCAL_PREFIX}-{_TYPES[table]}-{tail}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class EmbeddedBackend:
    """Local backend; see the module docstring.

    Args:
        home: data directory (default :func:`default_home`).
        read_only: for commands that only read (``images``, ``inspect``, ``info``):
            nothing is created or written, so they work on a full disk
            (see :meth:`_open_read_only`); writing methods then fail.
    """

    kind = "local"
    stores_in_place = True
    confirms_stored_blocks = True

    def __init__(
        self, home: str | os.PathLike[str] | None = None, *, read_only: bool = False
    ) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.read_only = read_only
        self._keep = self.home / "keep"
        self._local = threading.local()
        self._block_io_lock = threading.Lock()
        self._block_io_pool: ThreadPoolExecutor | None = None
        self._writer_lock: weakref.finalize[[int], EmbeddedBackend] | None = None
        if read_only:
            self._db()
            return
        try:
            self._keep.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"cannot create the keeptar home {self.home}: {exc.strerror}"
            ) from None
        try:
            self._db().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BackendError(f"opening the keeptar catalog in {self.home}: {exc}") from None

    # ---- plumbing --------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self.read_only:
                db = self._open_read_only()
            else:
                db = sqlite3.connect(
                    self.home / "catalog.sqlite3", timeout=60, isolation_level=None
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")  # a commit is durable when it returns
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA case_sensitive_like=ON")
            self._local.db = db
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        """A connection that never writes the catalog (``mode=ro``, ``query_only``).

        A reader of a WAL database still needs the ``-shm`` index file, and creates or
        grows it; on a full disk that fails ("disk I/O error").  Then, if the ``-wal``
        file is missing or empty, every commit is in the database file itself, and it
        is read as immutable (no ``-shm`` at all).  A non-empty ``-wal`` (a load is
        writing, or one was killed) cannot be read without the index: that is an error
        naming the cause.  A home with no catalog yet reads as empty.
        """
        path = self.home / "catalog.sqlite3"
        if not path.exists():
            db = sqlite3.connect(":memory:", isolation_level=None)
            db.executescript(_SCHEMA)
            db.execute("PRAGMA query_only=ON")
            return db
        uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
            db.execute("PRAGMA query_only=ON")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL
            return db
        except sqlite3.Error as exc:
            first_error = exc
        try:
            wal_size = os.stat(f"{path}-wal").st_size
        except FileNotFoundError:
            wal_size = 0
        except OSError as exc:
            raise BackendError(f"reading the keeptar catalog in {self.home}: {exc}") from None
        if wal_size:
            raise BackendError(
                f"reading the keeptar catalog in {self.home}: {first_error} (its write-ahead "
                f"log holds {wal_size} bytes, which cannot be read without writing its "
                "index: is the disk full?)"
            )
        try:
            db = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None)
            db.execute("PRAGMA query_only=ON")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"reading the keeptar catalog in {self.home}: {exc}") from None
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; inside :meth:`atomic`, a savepoint of it."""
        db = self._db()
        if db.in_transaction:
            # Joined to the enclosing transaction: a failure undoes this part only,
            # and nothing is committed until the outermost one ends.
            depth = getattr(self._local, "depth", 0) + 1
            self._local.depth = depth
            savepoint = f"keeptar_{depth}"
            db.execute(f"SAVEPOINT {savepoint}")
            try:
                yield db
            except BaseException:
                db.execute(f"ROLLBACK TO {savepoint}")
                db.execute(f"RELEASE {savepoint}")
                raise
            else:
                db.execute(f"RELEASE {savepoint}")
            finally:
                self._local.depth = depth - 1
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BackendError(f"opening the keeptar catalog: {exc}") from None
        try:
            yield db
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                raise BackendError(f"updating the keeptar catalog: {exc}") from None
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise BackendError(f"updating the keeptar catalog: {exc}") from None

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction that every catalog call inside joins.

        Reads inside it see its own writes; other processes wait (busy timeout)
        to write, so two registrations never interleave.  An exception rolls back
        everything done inside it.
        """
        with self._transaction():
            yield

    def reopen(self) -> EmbeddedBackend:
        """A new handle on the same home, with its own catalog connection."""
        return EmbeddedBackend(self.home)

    def close(self) -> None:
        """Close this thread's catalog connection, and let ``keeptar gc`` run again."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
        with self._block_io_lock:
            if self._writer_lock is not None:
                self._writer_lock()  # closes the file, which releases the shared lock
                self._writer_lock = None

    def hold_writer_lock(self) -> None:
        """Take the shared writers' lock, once; it is held until :meth:`close` (or until
        this object is collected, or the process ends).

        Called before the first block is written or looked for, and before any
        collection is created, so blocks that no collection names yet, because their
        load has not registered them, are never seen by ``keeptar gc``, which takes
        the lock exclusively (:mod:`keeptar.backends.gc`).
        """
        with self._block_io_lock:
            if self._writer_lock is not None:
                return
            try:
                fd = os.open(self.home / WRITERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise BackendError(
                    f"cannot use {self.home / WRITERS_LOCK}: {exc.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a gc runs
            except BaseException:
                os.close(fd)
                raise
            self._writer_lock = weakref.finalize(self, os.close, fd)

    # ---- facts, users, projects ------------------------------------------------------

    def server_facts(self) -> ServerFacts:
        formats: Sequence[str] = ("v2",)
        config_path = self.home / "config.json"
        if config_path.exists():
            try:
                config = json.loads(config_path.read_text())
            except ValueError as exc:
                raise UsageError(f"{config_path}: invalid JSON: {exc}") from None
            formats = tuple(config.get("docker_image_formats", formats))
        return ServerFacts(tuple(formats), LOCAL_PREFIX, 1)

    def current_user(self) -> User:
        return User(uuid=LOCAL_USER_UUID, is_admin=True, full_name="keeptar local user")

    def create_project(self, name: str, owner_uuid: str | None = None) -> Record:
        """Create a project (a group of class ``project``)."""
        now = _now()
        record = {
            "uuid": _new_uuid("groups"),
            "owner_uuid": owner_uuid or LOCAL_USER_UUID,
            "name": name,
            "group_class": "project",
            "created_at": now,
            "modified_at": now,
        }
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO groups VALUES (:uuid, :owner_uuid, :name, :group_class, "
                    ":created_at, :modified_at)",
                    record,
                )
        except sqlite3.IntegrityError:
            raise ConflictError(f"a project named {name!r} already exists there") from None
        return {**record, "can_write": True}

    def get_project(self, uuid: str) -> Record:
        check_owner_uuid(uuid)
        if uuid == LOCAL_USER_UUID:
            return {"uuid": uuid, "name": "Home", "group_class": "project", "can_write": True}
        row = self._db().execute("SELECT * FROM groups WHERE uuid = ?", (uuid,)).fetchone()
        if row is None:
            raise NotFoundError(f"project {uuid} not found")
        return {**dict(row), "can_write": True}

    # ---- blocks ----------------------------------------------------------------------

    def _block_path(self, md5: str) -> Path:
        return self._keep / md5[:3] / md5

    def put_block(self, data: bytes | memoryview, *, md5: str | None = None) -> str:
        if self.read_only:
            raise BackendError(f"the keeptar home {self.home} was opened read-only")
        self.hold_writer_lock()
        # Released on the way out, failures included: a view left alive in a traceback
        # would keep the caller's mmap from closing.
        with memoryview(data).cast("B") as view:
            return self._put_view(view, md5)

    def _put_view(self, view: memoryview, known_md5: str | None = None) -> str:
        size = len(view)
        if size > 1 << 26:
            raise BackendError(f"block of {size} bytes is over the 64 MiB Keep limit")
        # The name is the md5, known only after hashing; meanwhile an I/O thread writes
        # the bytes to a temporary name, so hashing and the disk work at the same time.
        tmp = self._keep / "tmp" / f"{os.getpid()}.{threading.get_ident()}"
        writing = self._block_io().submit(write_new_file, tmp, view)
        try:
            md5 = known_md5 or hashlib.md5(view).hexdigest()
        except BaseException:
            futures.wait([writing])
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        error = writing.exception()  # waits: *view* must outlive the write
        path = self._block_path(md5)
        try:
            if error is not None:
                raise error
            # Replace even a block that exists: the new copy is known good, while the old
            # one may be damaged (keepstore likewise rewrites a block that fails to compare).
            path.parent.mkdir(exist_ok=True)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise BackendError(f"writing block {md5} to {self._keep}: {exc.strerror}") from None
        return f"{md5}+{size}"

    def _block_io(self) -> ThreadPoolExecutor:
        with self._block_io_lock:
            if self._block_io_pool is None:
                self._remove_stale_temporary_files()
                self._block_io_pool = ThreadPoolExecutor(2, thread_name_prefix="keeptar-disk")
            return self._block_io_pool

    def _remove_stale_temporary_files(self) -> None:
        """Delete half-written blocks left by keeptar processes that no longer run.

        Temporary files are named ``keep/tmp/<pid>.<thread>``; a process killed
        mid-write (SIGKILL, power loss) leaves one behind.
        """
        tmp_dir = self._keep / "tmp"
        try:
            tmp_dir.mkdir(exist_ok=True)
            names = os.listdir(tmp_dir)
        except OSError as exc:
            raise BackendError(f"cannot use {tmp_dir}: {exc.strerror}") from None
        for name in names:
            pid = name.partition(".")[0]
            if pid.isdigit() and not _process_exists(int(pid)):
                with contextlib.suppress(OSError):
                    (tmp_dir / name).unlink()

    def resume_scope(self) -> None:
        """None: ``has_block`` vouches for blocks stored by another process (no cache)."""
        return None

    def has_block(self, locator: str) -> bool:
        parsed = Locator.parse(locator)
        if not self.read_only:
            # A writer may rely on the answer (a resumed load skips the block): from now
            # on gc must not delete it.
            self.hold_writer_lock()
        try:
            return self._block_path(parsed.md5).stat().st_size == parsed.size
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise BackendError(f"looking for block {parsed.stripped}: {exc.strerror}") from None

    def get_block(self, locator: str) -> bytes:
        parsed = Locator.parse(locator)
        try:
            data = self._block_path(parsed.md5).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"block {parsed.stripped} is not in the local store") from None
        except OSError as exc:
            raise BackendError(f"reading block {parsed.stripped}: {exc.strerror}") from None
        if len(data) != parsed.size or hashlib.md5(data).hexdigest() != parsed.md5:
            raise BackendError(f"block {parsed.stripped} in the local store is corrupt")
        return data

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
        now = _now()
        record: Record = {
            "uuid": _new_uuid("collections"),
            "owner_uuid": owner_uuid,
            "name": name,
            "portable_data_hash": portable_data_hash(manifest_text),
            "manifest_text": manifest_text,
            "properties": dict(properties),
            "replication_desired": None,
            "created_at": now,
            "modified_at": now,
        }
        self.hold_writer_lock()  # before checking: gc may not delete them from now on
        self._check_blocks(manifest_text)
        for attempt in range(2):
            try:
                with self._transaction() as db:
                    db.execute(
                        "INSERT INTO collections VALUES (:uuid, :owner_uuid, :name, "
                        ":portable_data_hash, :manifest_text, :properties, "
                        ":replication_desired, :created_at, :modified_at)",
                        {**record, "properties": json.dumps(record["properties"])},
                    )
                return record
            except sqlite3.IntegrityError:
                if not ensure_unique_name or attempt:
                    raise ConflictError(
                        f"a collection named {name!r} already exists in {owner_uuid}"
                    ) from None
                # As the API server does: the random part of the UUID goes into the name.
                record["name"] = f"{name[:237]} ({record['uuid'][-15:]})"
        raise AssertionError("unreachable")

    def _check_blocks(self, manifest_text: str) -> None:
        try:
            files = parse_manifest(manifest_text)
        except UsageError as exc:
            raise UsageError(f"invalid manifest: {exc}") from None
        for item in files:
            for segment in item.segments:
                locator = Locator.parse(segment.locator)
                if locator.size and not self.has_block(segment.locator):
                    raise NotFoundError(f"block {locator.stripped} is not in the local store")

    def get_collection(self, uuid_or_pdh: str) -> Record:
        if is_portable_data_hash(uuid_or_pdh):
            sql = (
                "SELECT * FROM collections WHERE portable_data_hash = ? "
                "ORDER BY created_at DESC LIMIT 1"
            )
        else:
            sql = "SELECT * FROM collections WHERE uuid = ?"
        row = self._db().execute(sql, (uuid_or_pdh,)).fetchone()
        if row is None:
            raise NotFoundError(f"collection {uuid_or_pdh} not found")
        return self._record(row)

    def list_collections(
        self, filters: Filters, *, select: Sequence[str] | None = None
    ) -> Iterator[Record]:
        yield from self._list("collections", filters, select)

    def update_collection(self, uuid: str, *, properties: Mapping[str, Any]) -> Record:
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE collections SET properties = ?, modified_at = ? WHERE uuid = ?",
                (json.dumps(dict(properties)), _now(), uuid),
            ).rowcount
        if not changed:
            raise NotFoundError(f"collection {uuid} not found")
        return self.get_collection(uuid)

    def delete_collection(self, uuid: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM collections WHERE uuid = ?", (uuid,))

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
        now = _now()
        record: Record = {
            "uuid": _new_uuid("links"),
            "owner_uuid": owner_uuid or LOCAL_USER_UUID,
            "link_class": link_class,
            "name": name,
            "head_uuid": head_uuid,
            "tail_uuid": tail_uuid,
            "properties": dict(properties),
            "created_at": now,
            "modified_at": now,
        }
        with self._transaction() as db:
            db.execute(
                "INSERT INTO links VALUES (:uuid, :owner_uuid, :link_class, :name, :head_uuid, "
                ":tail_uuid, :properties, :created_at, :modified_at)",
                {**record, "properties": json.dumps(record["properties"])},
            )
        return record

    def list_links(
        self, filters: Filters, *, select: Sequence[str] | None = None
    ) -> Iterator[Record]:
        yield from self._list("links", filters, select)

    def delete_link(self, uuid: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM links WHERE uuid = ?", (uuid,))

    # ---- queries ---------------------------------------------------------------------

    @staticmethod
    def _record(row: sqlite3.Row) -> Record:
        record = dict(row)
        if "properties" in record:
            record["properties"] = json.loads(record["properties"])
        return record

    def _list(self, table: str, filters: Filters, select: Sequence[str] | None) -> Iterator[Record]:
        where, params = _where(table, filters)
        sql = f"SELECT * FROM {table}{where} ORDER BY created_at ASC, uuid ASC"
        for row in self._db().execute(sql, params).fetchall():
            record = self._record(row)
            yield record if select is None else {k: record[k] for k in select if k in record}


def _where(table: str, filters: Filters) -> tuple[str, list[Any]]:
    """Translate Arvados filters to a SQL WHERE clause for *table*."""
    clauses: list[str] = []
    params: list[Any] = []
    for item in filters:
        if len(item) != 3:
            raise UsageError(f"bad filter {list(item)!r}: expected [attribute, operator, operand]")
        attribute, operator, operand = item
        if attribute in _COLUMNS[table]:
            column = attribute
        elif isinstance(attribute, str) and attribute.startswith("properties."):
            column = "json_extract(properties, ?)"
            params.append("$." + json.dumps(attribute[len("properties.") :]))
        else:
            raise UsageError(f"cannot filter {table} on {attribute!r}")
        op = str(operator).lower()
        if op in _SQL_OPS:
            clauses.append(f"{column} {_SQL_OPS[op]} ?")
            params.append(operand)
        elif op in ("in", "not in"):
            values = list(operand)
            marks = ", ".join("?" * len(values)) or "NULL"
            clauses.append(f"{column} {op.upper()} ({marks})")
            params.extend(values)
        elif op == "like":
            clauses.append(f"{column} LIKE ? ESCAPE '\\'")
            params.append(operand)
        elif op == "ilike":
            clauses.append(f"lower({column}) LIKE lower(?) ESCAPE '\\'")
            params.append(operand)
        else:
            raise UsageError(f"unsupported filter operator {operator!r}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params
