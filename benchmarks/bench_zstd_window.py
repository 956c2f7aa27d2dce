"""Peak memory of `keeptar load` from a `zstd --long=27` pipe (issue 8 §3), side by side.

Run:  python3 benchmarks/bench_zstd_window.py [--write] [--gib N] [--before PATH]

A zstd frame made with ``--long=27`` from a pipe announces a 128 MiB window, and
the decoder holds all of it.  keeptar then stores 32 MiB blocks, one in flight,
instead of 64 MiB blocks, two in flight, so the total stays under the README's 300 MiB.  Rows: this
checkout, and with ``--before PATH`` another checkout (e.g. the code before the
change) on the same compressed stream, on the embedded store and on the Arvados
emulator; plus ``zstd -d`` alone (the window's own cost) for scale.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    CACHE,
    Run,
    add_image_metadata,
    emulator_process,
    machine,
    run,
    table_row,
    write_section,
)

HEADING = "### `keeptar load` from a `zstd --long=27` pipe"


class _Hashing:
    """A file object reading *size* bytes of /dev/urandom, hashing them as they go."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._random = open("/dev/urandom", "rb")  # noqa: SIM115
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._random.read(size)
        self._left -= len(data)
        self.sha256.update(data)
        return data


def random_archive(gib: int) -> Path:
    """A docker-v2 archive of incompressible layers (512 MiB each; cached between runs).

    Incompressible, so decompression outruns storage, blocks pile up in flight and
    every page of the window is used: the worst case for memory.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"urandom-{gib}GiB.tar"
    if path.exists():
        return path
    tmp = path.with_suffix(".part")
    names, diff_ids = [], []
    with tarfile.open(tmp, "w") as tar:
        for number in range(2 * gib):
            # a layer member holding raw random bytes; its diff ID is their sha256
            info = tarfile.TarInfo(f"{number:064x}/layer.tar")
            info.size = 512 << 20
            source = _Hashing(info.size)
            tar.addfile(info, source)  # type: ignore[arg-type]
            names.append(info.name)
            diff_ids.append("sha256:" + source.sha256.hexdigest())
        add_image_metadata(tar, diff_ids, names, "bench/random:latest")
    tmp.rename(path)
    return path


def packed(path: Path) -> Path:
    """*path* compressed by ``zstd --long=27`` from a pipe (so the window stays 128 MiB)."""
    out = path.with_name(path.name + ".long27.zst")
    if not out.exists():
        tmp = out.with_suffix(".part")
        subprocess.run(f"zstd -q -T2 --long=27 -c < {path} > {tmp}", shell=True, check=True)
        tmp.rename(out)
    return out


def keeptar_in(checkout: Path) -> str:
    """A shell command running the keeptar of *checkout* (``-m`` imports from the cwd first)."""
    return f"cd {checkout} && {sys.executable} -m keeptar"


def main() -> None:
    gib = int(sys.argv[sys.argv.index("--gib") + 1]) if "--gib" in sys.argv else 2
    before = Path(sys.argv[sys.argv.index("--before") + 1]) if "--before" in sys.argv else None
    path = random_archive(gib)
    stream = packed(path)
    size_mib = path.stat().st_size / (1 << 20)
    checkouts = [("this checkout", HERE.parent)]
    if before is not None:
        checkouts.append((f"before ({before.name})", before))
    rows: list[tuple[str, Run]] = []
    with emulator_process() as emulator:
        rows.append(
            (
                "zstd -d --long=27 (the window alone)",
                run(f"zstd -q -d --long=27 -c < {stream} > /dev/null", shell=True, repeat=1),
            )
        )
        for label, checkout in checkouts:
            keeptar = keeptar_in(checkout)
            os.environ["KEEPTAR_BACKEND"] = "local"
            os.environ["KEEPTAR_HOME"] = home = tempfile.mkdtemp(prefix="keeptar-bench-zw-")
            rows.append(
                (
                    f"{label}: load - (embedded store)",
                    run(f"{keeptar} load --no-progress - < {stream}", shell=True, repeat=1),
                )
            )
            subprocess.run(["rm", "-rf", home], check=True)
            os.environ.update(emulator.env)
            os.environ["KEEPTAR_BACKEND"] = "arvados"
            rows.append(
                (
                    f"{label}: load - (Arvados emulator)",
                    run(
                        f"{keeptar} load --force --no-progress - < {stream}",
                        shell=True,
                        repeat=1,
                        server=emulator.pid,
                    ),
                )
            )
    lines = [
        f"{HEADING} ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine()}. Input: a {size_mib / 1024:.2f} GiB docker-v2 archive of "
        "incompressible layers (from /dev/urandom: the worst case), compressed by "
        "`zstd --long=27` from a pipe (window 128 MiB, "
        f"{stream.stat().st_size / (1 << 20):.0f} MiB), piped to `keeptar load -`. One run "
        "each, side by side in one run of `benchmarks/bench_zstd_window.py`; the README "
        "promises a peak RSS under 300 MiB.",
        "",
        "| command | seconds | MiB/s | peak RSS MiB | command CPU s | emulator CPU s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [table_row(label, result, size_mib) for label, result in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if "--write" in sys.argv:
        write_section(report, HEADING)


if __name__ == "__main__":
    main()
