"""Helpers shared by the benchmark scripts: a big test archive, timing, machine facts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("KEEPTAR_BENCH_CACHE", "/tmp/keeptar-bench"))
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TESTS = Path(__file__).resolve().parent.parent / "tests"


def add_image_metadata(
    tar: tarfile.TarFile,
    diff_ids: list[str],
    layers: list[str],
    repo_tag: str,
    *,
    compact: bool = False,
) -> None:
    """Append a docker-v2 image's config and manifest.json to *tar*: the layers
    *layers* (member names, base first) with their *diff_ids*, named *repo_tag*."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        separators=(",", ":") if compact else None,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layers}])
    for member, data in ((config_name, config), ("manifest.json", manifest.encode())):
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def big_archive(layers: int = 3, layer_mib: int = 360) -> Path:
    """A valid docker-v2 style archive of *layers* random layers (cached between runs).

    Each layer is a real tar holding one file of random bytes; the config lists
    their true diff IDs, so ``inspect --verify`` passes.
    """
    return layered_archive(
        CACHE / f"big-{layers}x{layer_mib}MiB.tar",
        layers,
        lambda number: _random(layer_mib << 20, seed=number),
        "bench/big:latest",
        compact=True,
    )


def layered_archive(
    path: Path,
    layers: int,
    payload: Callable[[int], bytes],
    repo_tag: str,
    *,
    compact: bool = False,
) -> Path:
    """*path*, made unless it exists: a docker-v2 archive of *layers* layers named *repo_tag*.

    Layer N is a real tar holding one file, ``data/blobN.bin``, of the bytes
    ``payload(N)``; the config lists the layers' true diff IDs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path
    tmp = path.with_suffix(".part")
    diff_ids, names = [], []
    with (
        open(tmp, "wb") as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for number in range(layers):
            data = payload(number)
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=tarfile.GNU_FORMAT) as layer:
                info = tarfile.TarInfo(f"data/blob{number}.bin")
                info.size = len(data)
                layer.addfile(info, io.BytesIO(data))
            del data
            layer_bytes = inner.getvalue()
            diff_ids.append("sha256:" + hashlib.sha256(layer_bytes).hexdigest())
            name = hashlib.sha256(str(number).encode()).hexdigest()
            names.append(f"{name}/layer.tar")
            info = tarfile.TarInfo(names[-1])
            info.size = len(layer_bytes)
            tar.addfile(info, io.BytesIO(layer_bytes))
            del layer_bytes, inner
        add_image_metadata(tar, diff_ids, names, repo_tag, compact=compact)
    tmp.rename(path)
    return path


def compressible_archive(gib: int = 1) -> tuple[Path, Path]:
    """A docker-v2 archive whose one layer is *gib* GiB of zeros, and its zstd form.

    The worst case for memory: every zstd block is a 4-byte RLE block that
    regenerates 128 KiB.  (The diff ID is not the layer's: ``load`` does not check it.)
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"zeros-{gib}GiB.tar"
    packed = path.with_name(path.name + ".zst")
    if not path.exists():
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            info = tarfile.TarInfo("z/layer.tar")
            info.size = gib << 30
            with open("/dev/zero", "rb") as zeros:
                tar.addfile(info, zeros)
            add_image_metadata(tar, ["sha256:" + "0" * 64], [info.name], "bench/zeros:latest")
        tmp.rename(path)
    if not packed.exists():
        subprocess.run(["zstd", "-q", "-f", str(path), "-o", str(packed)], check=True)
    return path, packed


def _random(size: int, seed: int) -> bytes:
    """Incompressible bytes, quickly: a repeated 1 MiB random block would let gzip cheat."""
    block = hashlib.shake_256(b"keeptar-bench-%d" % seed).digest(1 << 20)
    parts = []
    for i in range(size >> 20):
        parts.append(bytes(b ^ (i & 0xFF) for b in block[:64]) + block[64:])
    return b"".join(parts)


@dataclass(frozen=True)
class Run:
    seconds: float
    max_rss_mib: float
    cpu_seconds: float = 0.0  # user + system time of the command, in the median run
    server_cpu_seconds: float = 0.0  # CPU time of the *server* process, in the median run


def script(name: str) -> str:
    """The installed console script *name* itself, not a version manager's shim.

    (A pyenv shim is a shell script that runs ``pyenv`` first: ~60 ms a call that
    belongs to neither contender.)
    """
    path = Path(sysconfig.get_path("scripts")) / name
    return str(path) if path.exists() else name


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process *pid* (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    command: list[str] | str, *, repeat: int = 3, shell: bool = False, server: int | None = None
) -> Run:
    """Run *command* *repeat* times: the median run's wall and CPU time, peak RSS of any child.

    *server*: a process (e.g. the Arvados emulator) whose CPU time during each run
    is recorded too.
    """
    runs, rss = [], 0.0
    for _ in range(repeat):
        os.sync()  # earlier writes' writeback must not throttle this run
        server_before = process_cpu_seconds(server) if server else 0.0
        start = time.perf_counter()
        proc = subprocess.Popen(command, shell=shell, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        server_used = process_cpu_seconds(server) - server_before if server else 0.0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"benchmark command failed: {command}")
        rss = max(rss, usage.ru_maxrss / 1024)
        runs.append((seconds, usage.ru_utime + usage.ru_stime, server_used))
    runs.sort()
    seconds, cpu, server_cpu = runs[len(runs) // 2]
    return Run(seconds, rss, cpu, server_cpu)


@dataclass(frozen=True)
class EmulatorProcess:
    """An Arvados emulator serving from its own process (see :func:`emulator_process`)."""

    process: subprocess.Popen[str]
    env: dict[str, str]  # its admin environment (ARVADOS_API_HOST, ..._TOKEN, ...)
    block_dirs: list[Path]  # its keepstores' block directories

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def emulator_process() -> Iterator[EmulatorProcess]:
    """``tests/arvados_emulator.py`` in its own process on 127.0.0.1, for a ``with`` block.

    On leaving, ``os.environ`` is restored as it was on entering (the block may
    point it at the emulator or the embedded store at will) and the emulator stops.
    """
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from arvados_emulator import Emulator\n"
        "with Emulator() as emulator:\n"
        "    print(json.dumps([emulator.env(), [str(d) for d in emulator.block_dirs]]),"
        " flush=True)\n"
        "    sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    saved = dict(os.environ)
    try:
        env, dirs = json.loads(process.stdout.readline())
        yield EmulatorProcess(process, env, [Path(d) for d in dirs])
    finally:
        os.environ.clear()
        os.environ.update(saved)
        process.stdin.close()
        process.wait(timeout=60)


def table_row(label: str, result: Run, size_mib: float | None = None) -> str:
    """One markdown row: seconds, MiB/s (when *size_mib* is given), RSS, CPU, emulator CPU."""
    rate = f" {size_mib / result.seconds:,.0f} |" if size_mib else ""
    server_cpu = f"{result.server_cpu_seconds:.2f}" if result.server_cpu_seconds else ""
    return (
        f"| {label} | {result.seconds:.2f} |{rate} {result.max_rss_mib:.0f} "
        f"| {result.cpu_seconds:.2f} | {server_cpu} |"
    )


def machine() -> str:
    """One line describing this machine."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (
        f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def write_section(report: str, heading: str) -> None:
    """Replace the section starting with *heading* in RESULTS.md (or append it)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n### ", start + 1)
        text = text[:start] + report.rstrip("\n") + "\n\n" + ("" if end < 0 else text[end + 1 :])
    else:
        text = text.rstrip("\n") + "\n\n" + report
    RESULTS.write_text(text)


def archive_in_subprocess(layers: int = 3, layer_mib: int = 360) -> Path:
    """:func:`big_archive`, built in a child process so this one stays small.

    (A forked child's ``ru_maxrss`` counts its parent's memory from before ``exec``,
    so a benchmark that built a 4 GiB archive in memory would misreport every RSS.)
    """
    out = subprocess.run(
        [sys.executable, __file__, str(layers), str(layer_mib)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


if __name__ == "__main__":
    print(big_archive(int(sys.argv[1]), int(sys.argv[2])))
