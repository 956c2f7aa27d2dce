"""Benchmark the migrate19 engines, native against docker, side by side, in one run.

Run:  DOCKER_HOST=... python3 benchmarks/bench_migrate.py [--write] [--no-docker]
(--write appends the section to RESULTS.md; the docker engine needs a daemon holding the
engine image, docker/migrate19/build.sh, and on VMs without CAP_SYS_RESOURCE
KEEPTAR_MIGRATE19_SECURITY=caps)

The input is one Docker 1.9-style v1 archive (image-formats notes §7: ``<id>/VERSION``,
``<id>/json``, ``<id>/layer.tar`` per layer, a parent chain, ``repositories``) with 4 layers
of 272 MiB of incompressible bytes (1.06 GiB of layers), stored as a collection in each
store first.  Contenders, each in its own process, on the embedded store and on the Arvados
emulator (its own process on 127.0.0.1):

- the floor the issue names: reading the stored blocks and sha256 of them, as
  ``cat BLOCK-FILES | sha256sum`` (the store's own files) and as one Python pass
  (``backend.get_block`` + ``hashlib.sha256``: the read path keeptar uses);
- the native engine: ``plan_conversion`` over the stored v1 file (every layer read once
  and hashed), ``rewrite_manifest`` (one new block: the tail) and a new collection;
- the docker engine: the stored v1 file streamed into ``ContainerEngine.convert`` (a
  Docker 20.10 in a container loads it and saves v2), its stdout through keeptar's stream
  load path (``keeptar.load._load_stream``, what ``keeptar load -`` runs) into the same
  store, registered.

Measured: wall and CPU seconds (median of 3; docker engine: 1 run), bytes written to Keep
(new block bytes in the store's block directory, and bytes the process passed to
``put_block``), peak RSS of the keeptar process, peak temporary disk (the process's TMPDIR;
for the docker engine also the outer daemon's copy of the engine image for the container
(vfs) and the inner daemon's data root, a tmpfs charged to the container's memory), and for
the docker engine the container's CPU and peak memory (its cgroup) and the outer daemon's CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))  # this checkout's keeptar, in the children too

from _common import CACHE, Run, emulator_process, machine, process_cpu_seconds, run  # noqa: E402

RESULTS = HERE / "RESULTS.md"
LAYERS = 4
LAYER_MIB = int(os.environ.get("BENCH_LAYER_MIB", "272"))  # a smaller value: a quick trial
TAG = "bench/v1big:latest"


# ---- the input: a v1 archive of >= 1 GiB of layers ------------------------------------


class _RandomStream(io.RawIOBase):
    """*size* incompressible, reproducible bytes (shake_256 per MiB), read as a file."""

    def __init__(self, size: int, seed: int) -> None:
        super().__init__()
        self._left = size
        self._seed = seed
        self._index = 0
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._buffer and self._left:
            self._buffer = hashlib.shake_256(b"v1big-%d-%d" % (self._seed, self._index)).digest(
                min(1 << 20, self._left)
            )
            self._index += 1
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        self._left -= count
        return count


def v1_json(layer_id: str, parent: str | None, number: int) -> bytes:
    """A layer's JSON as Docker 1.9.1 wrote it."""
    doc: dict[str, Any] = {"id": layer_id}
    if parent:
        doc["parent"] = parent
    doc.update(
        {
            "created": f"2015-11-20T10:0{number}:00.123456789Z",
            "container": f"{number}" * 64,
            "container_config": {
                "Hostname": "b",
                "Cmd": ["/bin/sh", "-c", f"#(nop) ADD file:blob{number}.bin in /data/"],
            },
            "docker_version": "1.9.1",
            "author": "",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "architecture": "amd64",
            "os": "linux",
            "Size": LAYER_MIB << 20,
        }
    )
    return json.dumps(doc).encode()


def v1_archive() -> Path:
    """The cached v1 archive: ``LAYERS`` layers of ``LAYER_MIB`` MiB, streamed to disk."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"v1-{LAYERS}x{LAYER_MIB}MiB.tar"
    if path.exists():
        return path
    tmp = path.with_suffix(".part")
    layer_file = path.with_suffix(".layer")
    ids = [hashlib.sha256(b"v1big layer %d" % n).hexdigest() for n in range(LAYERS)]
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, data: bytes | None = None, file: Path | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 1448013600
            if data is None and file is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                return
            info.mode = 0o644
            if file is not None:
                info.size = file.stat().st_size
                with file.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        add("repositories", json.dumps({"bench/v1big": {"latest": ids[-1]}}).encode())
        for number, layer_id in enumerate(ids):
            with tarfile.open(layer_file, "w", format=tarfile.GNU_FORMAT) as layer:
                info = tarfile.TarInfo(f"data/blob{number}.bin")
                info.size, info.mtime = LAYER_MIB << 20, 1448013600
                layer.addfile(info, _RandomStream(info.size, number))
            add(f"{layer_id}/")
            add(f"{layer_id}/VERSION", b"1.0")
            add(f"{layer_id}/json", v1_json(layer_id, ids[number - 1] if number else None, number))
            add(f"{layer_id}/layer.tar", file=layer_file)
    layer_file.unlink()
    tmp.rename(path)
    return path


# ---- the child processes (each contender runs in its own) -----------------------------


def _counting_backend() -> tuple[Any, dict[str, Any]]:
    """The backend chosen by the environment, its put_block counting what it is given."""
    from keeptar.backends import open_backend

    backend = open_backend(quiet=True)
    counts: dict[str, Any] = {"put_bytes": 0, "put_blocks": 0}
    put = backend.put_block

    def counted(data: bytes | memoryview, **kwargs: Any) -> str:
        counts["put_bytes"] += len(data)
        counts["put_blocks"] += 1
        return put(data, **kwargs)

    backend.put_block = counted  # type: ignore[method-assign]
    return backend, counts


def _v1_reader(backend: Any, pdh: str) -> Any:
    from keeptar.keep.blocks import KeepFileReader
    from keeptar.keep.manifest import parse_manifest
    from keeptar.streaming.sources import ByteSource

    (item,) = parse_manifest(backend.get_collection(pdh)["manifest_text"])
    reader = KeepFileReader(backend.get_block, item, name=f"{pdh}/{item.path}")
    return item, ByteSource(reader, reader.name)  # type: ignore[arg-type]


def _write_stats(stats: dict[str, Any]) -> None:
    Path(os.environ["BENCH_STATS"]).write_text(json.dumps(stats))


def child_setup(path: str) -> None:
    """Store the v1 archive as a collection; print its PDH."""
    from keeptar.backends import open_backend
    from keeptar.keep.blocks import store_file
    from keeptar.keep.manifest import single_file_manifest

    backend = open_backend(quiet=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        stored = store_file(
            backend.put_block, fd, os.fstat(fd).st_size, detach=not backend.stores_in_place
        )
    finally:
        os.close(fd)
    record = backend.create_collection(
        manifest_text=single_file_manifest("v1.tar", stored.locators, stored.size),
        name=f"bench v1 image {time.time_ns()}",
        owner_uuid=backend.current_user().uuid,
        properties={},
    )
    print(record["portable_data_hash"])


def child_native(pdh: str) -> None:
    """The native engine: plan (read + hash every layer once), one new block, a collection."""
    from keeptar.catalog.loadable import rewrite_manifest
    from keeptar.migrate import plan_conversion

    start = time.perf_counter()
    backend, counts = _counting_backend()
    item, source = _v1_reader(backend, pdh)
    plan = plan_conversion(source)
    (image,) = plan.images
    text = rewrite_manifest(backend, item.segments, plan.rewrite, image.config_name[:-5] + ".tar")
    record = backend.create_collection(
        manifest_text=text,
        name=f"bench v2 image (native) {time.time_ns()}",
        owner_uuid=backend.current_user().uuid,
        properties={},
    )
    counts.update(seconds_in_process=time.perf_counter() - start)
    _write_stats({**counts, "image_id": image.id, "pdh": record["portable_data_hash"]})


def child_docker(pdh: str) -> None:
    """The docker engine: the v1 file into the container, its v2 stdout into keeptar's
    stream load path (as ``keeptar load -`` runs it), registered."""
    from keeptar.catalog.registration import resolve_owner
    from keeptar.load import _load_stream, _Target
    from keeptar.migrate.container import ContainerEngine

    start = time.perf_counter()
    backend, counts = _counting_backend()
    _, v1 = _v1_reader(backend, pdh)
    engine = ContainerEngine()
    target = _Target(backend, resolve_owner(backend, None), None, None, True)
    with engine.convert(v1, name="the v1 collection") as v2:
        result = _load_stream(target, v2, image_ref=None, force_image_format=True, progress=None)
    counts.update(seconds_in_process=time.perf_counter() - start)
    _write_stats({**counts, "image_id": result.image_id, "flags": engine.security_flags})


def child_hash(pdh: str, hashing: bool = True) -> None:
    """The floor in Python: every stored block read through the backend (as every keeptar
    reader gets it: the store checks its md5), and sha256 of it all unless not *hashing*."""
    from keeptar.backends import open_backend
    from keeptar.keep.manifest import parse_manifest

    backend = open_backend(quiet=True)
    (item,) = parse_manifest(backend.get_collection(pdh)["manifest_text"])
    digest = hashlib.sha256()
    for segment in item.segments:
        data = backend.get_block(segment.locator)
        if hashing:
            digest.update(memoryview(data)[: segment.length])
    _write_stats({"sha256": digest.hexdigest()} if hashing else {})


def child_read(pdh: str) -> None:
    """Reading the stored blocks only: :func:`child_hash` without the sha256."""
    child_hash(pdh, hashing=False)


def child_sha256(path: str) -> None:
    """sha256 of the archive file (page cache warm): what hashing the layers costs alone."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as stream:
        while count := stream.readinto(buffer):
            digest.update(memoryview(buffer)[:count])
    _write_stats({"sha256": digest.hexdigest()})


# ---- measuring ------------------------------------------------------------------------


def tree_bytes(root: Path) -> int:
    """Bytes in the regular files under *root*."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


@dataclass
class DockerSide:
    """What the container and the outer daemon used during one docker-engine run."""

    container_cpu: float = 0.0
    container_peak_mib: float = 0.0
    container_shmem_peak_mib: float = 0.0
    rootfs_copy_mib: float = 0.0
    daemon_cpu: float = 0.0
    seen: bool = False


@dataclass
class Sampler:
    """Polls, while one contender runs: its TMPDIR's size, and the migrate19 container."""

    tmpdir: Path
    docker_root: Path | None = None
    interval: float = 0.25
    peak_tmp: int = 0
    side: DockerSide = field(default_factory=DockerSide)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._before = set(os.listdir(self._vfs)) if self._vfs else set()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    @property
    def _vfs(self) -> Path | None:
        return None if self.docker_root is None else self.docker_root / "vfs" / "dir"

    def _loop(self) -> None:
        container: str | None = None
        while not self._stop.wait(self.interval):
            self.peak_tmp = max(self.peak_tmp, tree_bytes(self.tmpdir))
            if self.docker_root is None:
                continue
            if container is None:
                found = subprocess.run(
                    ["docker", "ps", "-q", "--no-trunc", "--filter", "name=keeptar-migrate19-"],
                    capture_output=True,
                    text=True,
                ).stdout.split()
                if found:
                    container = found[0]
                    self.side.seen = True
                    assert self._vfs is not None
                    new = set(os.listdir(self._vfs)) - self._before
                    self.side.rootfs_copy_mib = sum(
                        tree_bytes(self._vfs / name) for name in new
                    ) / (1 << 20)
                continue
            memory = _cgroup("memory", container)
            cpu = _cgroup("cpuacct", container)
            if memory is None or cpu is None:
                continue
            try:
                peak = int((memory / "memory.max_usage_in_bytes").read_text())
                stat = dict(
                    line.split()
                    for line in (memory / "memory.stat").read_text().splitlines()
                    if line.count(" ") == 1
                )
                used = int((cpu / "cpuacct.usage").read_text()) / 1e9
            except (OSError, ValueError):
                continue
            self.side.container_peak_mib = max(self.side.container_peak_mib, peak / (1 << 20))
            self.side.container_shmem_peak_mib = max(
                self.side.container_shmem_peak_mib, int(stat.get("shmem", 0)) / (1 << 20)
            )
            self.side.container_cpu = max(self.side.container_cpu, used)


def _cgroup(controller: str, container: str) -> Path | None:
    """The container's cgroup (v1, cgroupfs driver) directory, wherever dockerd was nested."""
    base = Path("/sys/fs/cgroup") / controller
    for candidate in (base / "docker" / container, *base.glob(f"*/*/docker/{container}")):
        if candidate.is_dir():
            return candidate
    return None


def daemon_cpu(pid: int) -> float:
    """CPU seconds of dockerd *pid* and its children (its containerd)."""
    total = process_cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += process_cpu_seconds(int(child))
    return total


@dataclass
class Result:
    label: str
    run: Run
    keep_new_bytes: int = 0  # block bytes added to the store's block directory (first run)
    put_bytes: int = 0  # bytes the process handed to put_block
    peak_tmp: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    side: DockerSide | None = None


def measure(
    label: str,
    command: list[str] | str,
    *,
    blocks: list[Path],
    repeat: int,
    server: int | None = None,
    docker_root: Path | None = None,
    dockerd_pid: int | None = None,
) -> Result:
    """Run *command* *repeat* times (``_common.run``, one at a time, so each run is sampled)."""
    runs, first_new, stats, peak_tmp = [], 0, {}, 0
    side = None
    for number in range(repeat):
        tmpdir = Path(tempfile.mkdtemp(prefix="keeptar-bench-tmp-", dir=CACHE))
        stats_file = tmpdir.with_suffix(".json")
        os.environ.update(TMPDIR=str(tmpdir), BENCH_STATS=str(stats_file))
        before = sum(map(tree_bytes, blocks))
        cpu_before = daemon_cpu(dockerd_pid) if dockerd_pid else 0.0
        with Sampler(tmpdir, docker_root) as sampler:
            runs.append(run(command, repeat=1, shell=isinstance(command, str), server=server))
        if number == 0:
            first_new = sum(map(tree_bytes, blocks)) - before
        if dockerd_pid:
            sampler.side.daemon_cpu = daemon_cpu(dockerd_pid) - cpu_before
            side = sampler.side
        peak_tmp = max(peak_tmp, sampler.peak_tmp)
        if stats_file.exists():
            stats = json.loads(stats_file.read_text())
            stats_file.unlink()
        shutil.rmtree(tmpdir, ignore_errors=True)
        print(f"  {label}: {runs[-1].seconds:.2f} s", file=sys.stderr, flush=True)
    for name in ("TMPDIR", "BENCH_STATS"):
        os.environ.pop(name, None)
    runs.sort(key=lambda r: r.seconds)
    middle = runs[len(runs) // 2]
    rss = max(r.max_rss_mib for r in runs)
    return Result(
        label,
        Run(middle.seconds, rss, middle.cpu_seconds, middle.server_cpu_seconds),
        first_new,
        int(stats.get("put_bytes", 0)),
        peak_tmp,
        stats,
        side,
    )


def block_files(blocks: list[Path], pdh: str) -> list[str]:
    """The store's files holding the collection *pdh*'s blocks, in order (one copy each)."""
    from keeptar.backends import open_backend
    from keeptar.keep.manifest import parse_manifest

    (item,) = parse_manifest(open_backend(quiet=True).get_collection(pdh)["manifest_text"])
    found = []
    for segment in item.segments:
        md5 = segment.locator.split("+", 1)[0]
        for volume in blocks:
            for candidate in (volume / md5[:3] / md5, volume / md5):
                if candidate.exists():
                    found.append(str(candidate))
                    break
            else:
                continue
            break
    return found


def bench_store(
    path: Path, blocks: list[Path], *, server: int | None, docker: dict[str, Any] | None
) -> list[Result]:
    """Every contender on one store (the environment already points at it)."""
    me = [sys.executable, str(Path(__file__).resolve())]
    pdh = subprocess.run(
        [*me, "_setup", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    # (in a child: importing the SDK here would raise every later child's ru_maxrss floor)
    files = json.loads(
        subprocess.run(
            [*me, "_blocks", pdh, *map(str, blocks)], check=True, capture_output=True, text=True
        ).stdout
    )
    run(["cat", *files], repeat=1)  # warm the page cache

    def on_store(label: str, command: list[str] | str, repeat: int = 3, **extra: Any) -> Result:
        return measure(label, command, blocks=blocks, repeat=repeat, server=server, **extra)

    results = [
        on_store("cat BLOCK-FILES | sha256sum (floor)", "cat " + " ".join(files) + " | sha256sum"),
        on_store("Python: get_block + sha256, every block (floor)", [*me, "_hash", pdh]),
        on_store("Python: get_block only, every block (reading)", [*me, "_read", pdh]),
        measure(
            "Python: sha256 of the archive file, page cache (hashing)",
            [*me, "_sha256", str(path)],
            blocks=blocks,
            repeat=3,
        ),
        on_store("native engine (plan_conversion + rewrite_manifest)", [*me, "_native", pdh]),
    ]
    if docker is not None:
        results.append(
            on_store(
                "docker engine (ContainerEngine.convert -> stream load)",
                [*me, "_docker", pdh],
                repeat=1,
                **docker,
            )
        )
    return results


def _mib(count: int) -> str:
    return f"{count / (1 << 20):,.1f}" if count >= 1 << 20 else f"{count / 1024:,.1f} KiB"


def report(stores: dict[str, list[Result]], path: Path, layers: int, docker_note: str) -> str:
    lines = [
        f"### `migrate19` engines: native vs docker ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end of the run. "
        f"Input: one v1 archive (Docker 1.9 layout, a chain of {LAYERS} layers of "
        f"{LAYER_MIB} MiB of incompressible bytes: {layers / (1 << 30):.2f} GiB of layers, "
        f"{path.stat().st_size / (1 << 30):.2f} GiB archive), stored first as a collection in "
        "each store; each contender reads it from there. Floors and native: median of 3 runs; "
        "docker engine: 1 run. Measured side by side in one run of "
        f"`benchmarks/bench_migrate.py`. {docker_note}",
        "",
        "| store | command | seconds | CPU s | emulator CPU s | peak RSS MiB "
        "| written to Keep (new block bytes) | put_block bytes | peak temp disk |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for store, results in stores.items():
        for r in results:
            engine = "engine" in r.label
            label = r.label.replace("|", "\\|")  # a pipe in a markdown cell
            lines.append(
                f"| {store} | {label} | {r.run.seconds:.2f} | {r.run.cpu_seconds:.2f} | "
                + (f"{r.run.server_cpu_seconds:.2f}" if r.run.server_cpu_seconds else "")
                + f" | {r.run.max_rss_mib:.0f} | "
                + (f"{r.keep_new_bytes:,} B | {r.put_bytes:,} B | {r.peak_tmp:,} B |"
                   if engine else " |  |  |")
            )  # fmt: skip
    lines.append("")
    for store, results in stores.items():

        def find(prefix: str, rows: list[Result] = results) -> Result:
            return next(r for r in rows if r.label.startswith(prefix))

        native, cat = find("native"), find("cat")
        both, read, sha = (
            find("Python: get_block + sha256"),
            find("Python: get_block only"),
            (find("Python: sha256")),
        )
        total = read.run.seconds + sha.run.seconds
        total_cpu = read.run.cpu_seconds + sha.run.cpu_seconds
        text = (
            f"- **{store}**: native writes **{native.put_bytes:,} B** to Keep per image "
            f"({native.keep_new_bytes:,} B of new block files; target < 65,536 B). Against "
            f"reading + sha256 (target < 1.0x): **{native.run.seconds / total:.2f}x** the sum "
            f"of reading the blocks ({read.run.seconds:.2f} s) and sha256 of the layers "
            f"({sha.run.seconds:.2f} s), {native.run.cpu_seconds / total_cpu:.2f}x in CPU "
            f"seconds; **{native.run.seconds / both.run.seconds:.2f}x** one Python pass doing "
            f"both ({native.run.cpu_seconds / both.run.cpu_seconds:.2f}x in CPU seconds); "
            f"{native.run.seconds / cat.run.seconds:.2f}x `cat | sha256sum` of the block files"
        )
        docker = next((r for r in results if r.label.startswith("docker")), None)
        if docker is not None:
            side = docker.side or DockerSide()
            all_cpu = docker.run.cpu_seconds + side.container_cpu + side.daemon_cpu
            text += (
                f". The docker engine takes **{docker.run.seconds / native.run.seconds:.1f}x** "
                f"the native engine's wall time (target >= 5x); CPU: "
                f"{docker.run.cpu_seconds / native.run.cpu_seconds:.1f}x in the keeptar process, "
                f"{all_cpu / native.run.cpu_seconds:.1f}x with the container's and the daemon's"
            )
        lines.append(text)
    for store, results in stores.items():
        docker = next((r for r in results if r.label.startswith("docker")), None)
        native = next(r for r in results if r.label.startswith("native"))
        if docker is None or docker.side is None:
            continue
        side = docker.side
        same = docker.stats.get("image_id") == native.stats.get("image_id")
        lines.append(
            f"- **{store}**, docker engine, beyond the keeptar process: container CPU "
            f"{side.container_cpu:.2f} s and peak memory {side.container_peak_mib:,.0f} MiB "
            f"(its cgroup; of which {side.container_shmem_peak_mib:,.0f} MiB the inner data "
            f"root on tmpfs at its peak), outer dockerd + containerd CPU {side.daemon_cpu:.2f} s, "
            f"the outer daemon's vfs copy of the engine image for the container "
            f"{side.rootfs_copy_mib:,.0f} MiB on disk; the same image ID as native: "
            f"{'yes' if same else 'NO'} ({native.stats.get('image_id', '?')[:19]}…)"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    me = [sys.executable, str(Path(__file__).resolve())]
    path = Path(
        subprocess.run([*me, "_archive"], check=True, capture_output=True, text=True).stdout.strip()
    )
    layers = LAYERS * (LAYER_MIB << 20)
    docker: dict[str, Any] | None = None
    docker_note = ""
    if "--no-docker" not in sys.argv:
        host = os.environ.get("DOCKER_HOST", "")
        root = os.environ.get("BENCH_DOCKER_ROOT") or (
            str(Path(host.removeprefix("unix://")).parent / "docker") if host else ""
        )
        pidfile = Path(root).parent / "dockerd.pid"
        docker = {"docker_root": Path(root), "dockerd_pid": int(pidfile.read_text())}
        docker_note = (
            "Docker engine: outer dockerd 20.10 (vfs, TZ=UTC, private data root), the engine "
            "image from `docker/migrate19/build.sh`, inner `--storage-driver overlay` on the "
            "default tmpfs data root, container security "
            f"`{os.environ.get('KEEPTAR_MIGRATE19_SECURITY', 'auto')}`."
        )
    saved = dict(os.environ)
    stores: dict[str, list[Result]] = {}
    with emulator_process() as emulator:
        home = Path(tempfile.mkdtemp(prefix="keeptar-bench-home-", dir=CACHE))
        os.environ.update(KEEPTAR_BACKEND="local", KEEPTAR_HOME=str(home))
        stores["embedded"] = bench_store(path, [home / "keep"], server=None, docker=docker)
        shutil.rmtree(home, ignore_errors=True)
        os.environ.clear()
        os.environ.update(saved)
        os.environ.update(emulator.env)
        os.environ["KEEPTAR_BACKEND"] = "arvados"
        stores["emulator"] = bench_store(
            path, emulator.block_dirs, server=emulator.pid, docker=docker
        )
    text = report(stores, path, layers, docker_note)
    print(text)
    for results in stores.values():
        for r in results:
            print(r.label, json.dumps(r.stats), file=sys.stderr)
    if "--write" in sys.argv:
        with RESULTS.open("a") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        what = sys.argv[1]
        if what == "_archive":
            print(v1_archive())
        elif what == "_blocks":
            print(json.dumps(block_files([Path(p) for p in sys.argv[3:]], sys.argv[2])))
        else:
            {
                "_setup": child_setup,
                "_native": child_native,
                "_docker": child_docker,
                "_hash": child_hash,
                "_read": child_read,
                "_sha256": child_sha256,
            }[what](sys.argv[2])
    else:
        main()
