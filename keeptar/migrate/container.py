"""The ``docker`` engine of ``keeptar migrate19``: Docker's own v1 → v2 conversion in a container.

The engine image (``docker/migrate19/``, built by ``docker/migrate19/build.sh``) runs a
Docker 20.10 daemon, the last kind that still loads v1 archives.  :meth:`ContainerEngine.convert`
streams a v1 archive into ``docker run -i --rm`` and hands back the container's stdout, the v2
``docker save`` archive, as a :class:`~keeptar.streaming.ByteSource` for ``keeptar load``'s
stream path.  Nothing is written to the host's disk and no credential enters the container: no
``--env``, no env file, no volume but an optional scratch directory, ``--network none``; the
``docker`` client itself runs with an environment from which credentials were removed, and
what it prints is scrubbed of tokens before it is shown.

Security flags.  The inner daemon needs a privileged container, so ``--privileged`` is the
default.  On hosts whose capability bounding set lacks ``CAP_SYS_RESOURCE`` (some VMs) runc
refuses ``--privileged`` with "unable to apply caps"; then :data:`CAPS_FLAGS` work.  Choose
with the *security* argument or ``KEEPTAR_MIGRATE19_SECURITY``: ``auto`` (the default: try
``--privileged`` once with a trivial container, fall back to :data:`CAPS_FLAGS` and say so),
``privileged``, ``caps``, or the flags themselves (``"--cap-add ALL ..."``).

The inner daemon's data root is a ``--tmpfs`` by default (in memory; it also avoids overlay on
overlay), or a fresh directory under *scratch_dir* on the host's disk, which is what
:func:`check_free_space` measures, as the original ``arv-migrate-docker19`` did.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO, TypeAlias, cast

from keeptar._subprocess import child_environment, child_message
from keeptar.errors import ArchiveError, KeeptarError, NotFoundError, UsageError
from keeptar.streaming.sources import ByteSource

__all__ = [
    "CAPS_FLAGS",
    "DEFAULT_IMAGE",
    "PRIVILEGED_FLAGS",
    "ContainerEngine",
    "V1Input",
    "check_free_space",
    "required_space",
]

DEFAULT_IMAGE = "keeptar/migrate19:1"
"""The image ``docker/migrate19/build.sh`` builds (``KEEPTAR_MIGRATE19_IMAGE`` overrides it)."""

PRIVILEGED_FLAGS: tuple[str, ...] = ("--privileged",)
CAPS_FLAGS: tuple[str, ...] = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
)  # fmt: skip
"""What works where ``--privileged`` fails with "unable to apply caps" (no CAP_SYS_RESOURCE)."""

STORAGE_DRIVERS = ("overlay", "overlay2", "vfs", "aufs", "btrfs", "devicemapper", "zfs")
"""The ``--storage-driver`` values the original tool passed on (Docker 20.10 knows them all)."""

V1Input: TypeAlias = str | os.PathLike[str] | BinaryIO | ByteSource | Iterable[bytes]
"""A v1 archive: a path, a binary stream (or :class:`ByteSource`), or an iterable of chunks."""

_CHUNK = 1 << 20
_NO_DAEMON = re.compile(
    r"cannot connect to the docker daemon|is the docker daemon running|"
    r"error during connect|permission denied while trying to connect",
    re.IGNORECASE,
)
_NO_IMAGE = re.compile(r"no such image|unable to find image|pull access denied", re.IGNORECASE)
_CAPS = "unable to apply caps"
_DAEMON_LOG = re.compile(r'^time="')  # the inner dockerd's own log lines


def _scrub(text: str | bytes) -> str:
    """A child's output with every credential removed (whitespace runs become one space)."""
    return child_message(text, limit=1 << 16)


# --- free space ----------------------------------------------------------------------


def required_space(largest_image: int, storage_driver: str = "overlay") -> int:
    """Bytes of scratch space the docker engine needs, as the original tool reckoned it.

    Args:
        largest_image: size in bytes of the largest v1 image archive to convert.
        storage_driver: the inner daemon's driver; ``vfs`` copies every layer, so x20.

    Returns:
        ``largest_image`` x 20 with vfs, else x 2.5.
    """
    factor = 20.0 if storage_driver == "vfs" else 2.5
    return int(largest_image * factor)


def check_free_space(
    path: str | os.PathLike[str], largest_image: int, storage_driver: str = "overlay"
) -> tuple[int, int]:
    """Check that *path* has :func:`required_space` free.

    Returns:
        ``(available, needed)`` in bytes.

    Raises:
        KeeptarError: too little space (the caller's ``--force`` decides whether to go on).
    """
    available = shutil.disk_usage(path).free
    needed = required_space(largest_image, storage_driver)
    if available < needed:
        factor = "20" if storage_driver == "vfs" else "2.5"
        raise KeeptarError(
            f"not enough free space in {os.fspath(path)}: {available} bytes available, "
            f"{needed} needed (largest image {largest_image} bytes x {factor} "
            f"with --storage-driver {storage_driver})"
        )
    return available, needed


# --- the engine ----------------------------------------------------------------------


def _security_flags(choice: str | Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """``(mode, flags)``: mode is ``auto``, ``privileged``, ``caps`` or ``custom``."""
    if choice is None:
        choice = os.environ.get("KEEPTAR_MIGRATE19_SECURITY") or "auto"
    if not isinstance(choice, str):
        return "custom", tuple(choice)
    word = choice.strip().lower()
    if word in ("auto", ""):
        return "auto", PRIVILEGED_FLAGS
    if word == "privileged":
        return "privileged", PRIVILEGED_FLAGS
    if word == "caps":
        return "caps", CAPS_FLAGS
    flags = tuple(shlex.split(choice))
    allowed = ("--privileged", "--cap-add", "--cap-drop", "--security-opt", "--device")
    for flag in flags:
        if flag.startswith("-") and not flag.startswith(allowed):
            raise UsageError(
                f"KEEPTAR_MIGRATE19_SECURITY: {flag!r} is not a security flag (give auto, "
                "privileged, caps, or --privileged/--cap-add/--cap-drop/--security-opt/--device)"
            )
    return "custom", flags


class ContainerEngine:
    """Runs Docker's own v1 → v2 conversion in the ``docker/migrate19`` image.

    Args:
        image: the engine image (default ``KEEPTAR_MIGRATE19_IMAGE``, else :data:`DEFAULT_IMAGE`).
        storage_driver: the inner daemon's ``--storage-driver`` (``overlay`` as the original
            tool; ``vfs`` works everywhere but copies every layer).
        security: ``auto`` / ``privileged`` / ``caps`` / a flag string or sequence
            (default ``KEEPTAR_MIGRATE19_SECURITY``, else ``auto``; see the module docs).
        scratch_dir: a host directory under which each run gets a fresh data root for the inner
            daemon; None puts it in a ``--tmpfs`` (memory).
        docker: the docker client command.
        notice: called with one line for things the user should know (the ``auto`` fallback).
        log: called with each line the container prints on stderr, scrubbed of tokens.
    """

    def __init__(
        self,
        image: str | None = None,
        *,
        storage_driver: str = "overlay",
        security: str | Sequence[str] | None = None,
        scratch_dir: str | os.PathLike[str] | None = None,
        docker: str = "docker",
        notice: Callable[[str], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if storage_driver not in STORAGE_DRIVERS:
            raise UsageError(
                f"unknown --storage-driver {storage_driver!r}: one of {', '.join(STORAGE_DRIVERS)}"
            )
        self.image = image or os.environ.get("KEEPTAR_MIGRATE19_IMAGE") or DEFAULT_IMAGE
        self.storage_driver = storage_driver
        self.security_mode, self._flags = _security_flags(security)
        self.scratch_dir = None if scratch_dir is None else Path(scratch_dir)
        self.docker = docker
        self._notice = notice or (lambda line: None)
        self._log = log
        self._env = child_environment()
        self._checked = False
        self._lock = threading.Lock()

    @property
    def security_flags(self) -> tuple[str, ...]:
        """The flags ``docker run`` gets (after :meth:`check`, the ones that work here)."""
        return self._flags

    def _docker(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [self.docker, *args], capture_output=True, env=self._env, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError:
            raise self._no_daemon(f"no {self.docker} command") from None

    def _no_daemon(self, detail: str) -> KeeptarError:
        return KeeptarError(
            f"no Docker daemon can be reached for the migrate19 docker engine ({detail}): "
            "start one or set DOCKER_HOST, or use --engine native"
        )

    def _no_image(self) -> NotFoundError:
        return NotFoundError(
            f"the migrate19 engine image {self.image} is not in the Docker daemon: "
            "build it with docker/migrate19/build.sh (or use --engine native)"
        )

    def _classify(self, status: int, stderr: str) -> KeeptarError:
        """The error for a ``docker`` command that failed before the container did any work."""
        detail = _one_line(stderr)
        if _NO_DAEMON.search(stderr):
            return self._no_daemon(detail)
        if _NO_IMAGE.search(stderr):
            return self._no_image()
        if _CAPS in stderr:
            return KeeptarError(
                f"docker run {' '.join(self._flags)} failed here ({_CAPS}: this host cannot "
                "grant every capability); set KEEPTAR_MIGRATE19_SECURITY=caps to use "
                f"{' '.join(CAPS_FLAGS)} instead"
            )
        return KeeptarError(f"the migrate19 container could not run (exit {status}): {detail}")

    def check(self) -> None:
        """Check once that a daemon answers, the image is there and the security flags work.

        With ``auto`` security, a trivial container is run with ``--privileged``; if runc
        cannot apply its capabilities, :data:`CAPS_FLAGS` are used from then on and *notice*
        says so.

        Raises:
            KeeptarError: no daemon ("use --engine native"), or the container cannot start.
            NotFoundError: the image is missing ("build it with docker/migrate19/build.sh").
        """
        with self._lock:
            if self._checked:
                return
            found = self._docker("image", "inspect", "--format", "{{.Id}}", self.image)
            if found.returncode != 0:
                text = _scrub(found.stderr)
                raise self._classify(found.returncode, text)
            if self.security_mode == "auto":
                probe = self._docker(*self._run_args(self._flags, entrypoint="true"))
                text = _scrub(probe.stderr)
                if probe.returncode != 0 and _CAPS in text:
                    self._flags = CAPS_FLAGS
                    self._notice(
                        f"docker run --privileged fails on this host ({_CAPS}); the migrate19 "
                        f"container runs with {' '.join(CAPS_FLAGS)} instead "
                        "(KEEPTAR_MIGRATE19_SECURITY=caps skips this probe)"
                    )
                elif probe.returncode != 0:
                    raise self._classify(probe.returncode, text)
            self._checked = True

    def _run_args(
        self,
        flags: Sequence[str],
        *,
        entrypoint: str | None = None,
        name: str | None = None,
        data_root: Path | None = None,
    ) -> list[str]:
        args = ["run", "--rm", "--pull", "never", "--network", "none", "--log-driver", "none"]
        args += flags
        if data_root is None:
            args += ["--tmpfs", "/var/lib/docker"]
        else:
            args += ["--mount", f"type=bind,source={data_root},target=/var/lib/docker"]
        if name is not None:
            args += ["-i", "--name", name]
        if entrypoint is not None:
            return [*args, "--entrypoint", entrypoint, self.image]
        return [*args, self.image, "--storage-driver", self.storage_driver]

    @contextlib.contextmanager
    def convert(self, source: V1Input, name: str = "v1 archive") -> Iterator[ByteSource]:
        """Convert the v1 archive *source*; yield the v2 archive as a stream.

        The v2 bytes are the container's stdout, read as they come.  The conversion's outcome
        is only known once they have all been read: leaving the ``with`` block checks it, so a
        consumer must not commit anything before the block ends without error.

        Args:
            source: the v1 archive (a path, binary stream, :class:`ByteSource` or chunks).
            name: how to call the input in messages.

        Raises:
            ArchiveError: the container's Docker could not load *source* as an image archive.
            NotFoundError: the engine image is missing.
            KeeptarError: no daemon, the container failed, or too little space in the container.
        """
        self.check()
        run_name = f"keeptar-migrate19-{uuid.uuid4().hex[:12]}"
        data_root = None
        if self.scratch_dir is not None:
            data_root = Path(tempfile.mkdtemp(prefix="keeptar-migrate19-", dir=self.scratch_dir))
        stdin, feed = _stdin_for(source)
        try:
            process = subprocess.Popen(
                [self.docker, *self._run_args(self._flags, name=run_name, data_root=data_root)],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                bufsize=0,
            )
        except BaseException:
            if feed is not None:
                os.close(feed[1])
            if data_root is not None:
                _remove_scratch(data_root)
            raise
        finally:
            os.close(stdin)  # the container's copy is its own
        assert process.stdout is not None and process.stderr is not None
        tail: collections.deque[str] = collections.deque(maxlen=20)
        reader = threading.Thread(
            target=self._read_stderr, args=(process.stderr, tail), daemon=True
        )
        reader.start()
        writer: _Feeder | None = None
        if feed is not None:
            writer = _Feeder(feed)
            writer.start()
        finished = False
        try:
            try:
                yield ByteSource(process.stdout, f"migrate19 conversion of {name}")  # type: ignore[arg-type]
                # Read what the consumer left (the end blocks), so docker's exit is clean.
                while process.stdout.read(_CHUNK):
                    pass
            except ArchiveError:
                self._outcome(process, reader, writer, tail, name, stop=True)
                raise
            self._outcome(process, reader, writer, tail, name)
            finished = True
        finally:
            if not finished and process.poll() is None:
                process.kill()
                self._docker("rm", "--force", run_name)
            process.wait()
            reader.join(timeout=10)
            if writer is not None:
                writer.stop()
            process.stdout.close()
            process.stderr.close()
            if data_root is not None:
                _remove_scratch(data_root)

    def _read_stderr(self, stream: IO[bytes], tail: collections.deque[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = _scrub(raw)
            if self._log is not None:
                self._log(line)
            if not _DAEMON_LOG.match(line) and line.strip():
                tail.append(line.strip())

    def _outcome(
        self,
        process: subprocess.Popen[bytes],
        reader: threading.Thread,
        writer: _Feeder | None,
        tail: collections.deque[str],
        name: str,
        *,
        stop: bool = False,
    ) -> None:
        """Raise the error that ended the conversion, if any (the feeder's first)."""
        if stop:
            # The consumer gave up on the output.  If the container is ending anyway (bad
            # input: empty output), its reason is the one to give; if it is still busy, the
            # consumer's error stands and the container is stopped.
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                return
        status = process.wait()
        reader.join(timeout=30)
        if writer is not None:
            writer.join()
            if writer.error is not None and not isinstance(writer.error, BrokenPipeError):
                raise writer.error
        if status == 0:
            return
        text = "\n".join(tail)
        detail = _one_line("\n".join(line for line in tail if not line.startswith("migrate19:")))
        if "no space left on device" in text.lower():
            where = "tmpfs" if self.scratch_dir is None else str(self.scratch_dir)
            raise KeeptarError(
                f"the migrate19 conversion of {name} ran out of space in its data root "
                f"({where}): {detail}"
            )
        if any("docker load failed" in line for line in tail):
            raise ArchiveError(
                f"the migrate19 engine's Docker could not load {name} as an image archive"
                + (f": {detail}" if detail else "")
            )
        if not any(line.startswith("migrate19:") for line in tail):
            raise self._classify(status, text)  # docker run itself failed
        raise KeeptarError(
            f"the migrate19 conversion of {name} failed (exit {status}): {_one_line(text)}"
        )


class _Feeder(threading.Thread):
    """Copies chunks into the container's stdin; keeps the first error for the caller."""

    def __init__(self, feed: tuple[Iterable[bytes], int]) -> None:
        super().__init__(daemon=True)
        self._chunks, self._fd = feed
        self.error: BaseException | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            for chunk in self._chunks:
                if self._stopped.is_set():
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self._fd, view) :]
        except BaseException as exc:  # handed to the consuming thread
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=30)


def _stdin_for(source: V1Input) -> tuple[int, tuple[Iterable[bytes], int] | None]:
    """The container's stdin: a file descriptor to hand over, or a pipe plus what to feed it.

    A path, or a seekable stream with a file descriptor, is handed over as it is (the
    stream's descriptor is duplicated at its current position, so the stream is consumed).
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            return os.open(source, os.O_RDONLY | os.O_CLOEXEC), None
        except OSError as exc:
            raise UsageError(f"cannot open {os.fspath(source)}: {exc.strerror}") from None
    chunks: Iterable[bytes]
    if isinstance(source, ByteSource):
        chunks = _read_chunks(source.read)
    elif hasattr(source, "read"):
        stream = cast(BinaryIO, source)
        with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
            if stream.seekable():
                duplicate = os.dup(stream.fileno())
                os.lseek(duplicate, stream.tell(), os.SEEK_SET)
                return duplicate, None
        chunks = _read_chunks(stream.read)
    else:
        chunks = source
    read_end, write_end = os.pipe()
    return read_end, (chunks, write_end)


def _read_chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while chunk := read(_CHUNK):
        yield chunk


def _remove_scratch(path: Path) -> None:
    # The entrypoint empties its data root on exit; what is left is an empty directory.
    with contextlib.suppress(OSError):
        shutil.rmtree(path)


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]
