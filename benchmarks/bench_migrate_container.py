"""Time the migrate19 docker engine (keeptar/migrate/container.py) on real v1 archives.

Run:  DOCKER_HOST=... python3 benchmarks/bench_migrate_container.py [--write]

Needs a Docker daemon with the engine image (docker/migrate19/build.sh).  Each row is the
median of 3 conversions (v1 archive in through stdin, v2 archive read to the end), for the
inner storage drivers overlay and vfs on the default tmpfs data root, and overlay on a scratch
directory on disk.  The fixed cost is starting the container and its dockerd.
"""

from __future__ import annotations

import hashlib
import io
import json
import statistics
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, machine

from keeptar.migrate.container import ContainerEngine

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = Path(__file__).resolve().parent.parent


def fixture_path(name: str) -> Path:
    """A fixture from tests/fixtures or ../shared/fixtures, as the tests find them."""
    for folder in (REPO / "tests" / "fixtures", REPO.parent / "shared" / "fixtures"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(name)


def v1_archive(layer_mib: int) -> Path:
    """A one-layer v1 (Docker 1.9 layout) archive whose layer holds *layer_mib* MiB (cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"v1-{layer_mib}MiB.tar"
    if path.exists():
        return path
    payload = hashlib.shake_256(b"keeptar-v1").digest(1 << 20) * layer_mib
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        member = tarfile.TarInfo("data/blob.bin")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    v1_id = hashlib.sha256(b"keeptar bench v1 %d" % layer_mib).hexdigest()
    config = {"id": v1_id, "created": "2015-01-01T00:00:00Z", "os": "linux", "config": {}}
    members = {
        f"{v1_id}/VERSION": b"1.0",
        f"{v1_id}/json": json.dumps(config).encode(),
        f"{v1_id}/layer.tar": layer.getvalue(),
        "repositories": json.dumps({"kt/bench": {"v1": v1_id}}).encode(),
    }
    tmp = path.with_suffix(".part")
    with tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    tmp.rename(path)
    return path


def convert_seconds(engine: ContainerEngine, path: Path, repeat: int = 3) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = 0
        with engine.convert(path) as source:
            while chunk := source.read():
                size += len(chunk)
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> None:
    inputs = [
        ("v1-moby-emptylayer.tar (30 KiB, 3 v1 layers)", fixture_path("v1-moby-emptylayer.tar")),
        ("docker-v1-app.tar (tests/fixtures)", fixture_path("docker-v1-app.tar")),
        ("synthetic v1, one 256 MiB layer", v1_archive(256)),
    ]
    scratch = CACHE / "migrate19-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    engines = {
        "overlay, tmpfs": ContainerEngine(storage_driver="overlay"),
        "vfs, tmpfs": ContainerEngine(storage_driver="vfs"),
        "overlay, scratch dir": ContainerEngine(storage_driver="overlay", scratch_dir=scratch),
    }
    for engine in engines.values():
        engine.check()  # the one-off security probe is not part of a conversion
    rows = [
        "| input | engine (inner driver, data root) | seconds | v2 bytes |",
        "|---|---|---:|---:|",
    ]
    for label, path in inputs:
        for name, engine in engines.items():
            seconds, size = convert_seconds(engine, path)
            rows.append(f"| {label} | {name} | {seconds:.1f} | {size:,} |")
            print(rows[-1], flush=True)
    flags = " ".join(next(iter(engines.values())).security_flags)
    text = (
        f"\n### migrate19 docker engine ({time.strftime('%Y-%m-%d')})\n\n"
        f"Machine: {machine()}. Outer dockerd 20.10 with vfs; container flags `{flags}`. "
        "Median of 3 conversions, measured in one run of "
        "`benchmarks/bench_migrate_container.py`, with other jobs sharing the 2 cores.\n\n"
        + "\n".join(rows)
        + "\n"
    )
    print(text)
    if "--write" in sys.argv:
        with RESULTS.open("a") as out:
            out.write(text)


if __name__ == "__main__":
    main()
