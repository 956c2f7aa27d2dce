"""Benchmark resuming a killed `keeptar load` on the Arvados emulator, side by side.

Run:  python3 benchmarks/bench_resume.py [--write]
(--write updates RESULTS.md)

On the same >= 1 GiB archive, page cache warm, the emulator in its own process:
- a fresh load (`--force`, no `--resume`: every block is PUT);
- a re-run after a load killed (SIGKILL) once 90% of its blocks were stored: the
  re-run HEADs the cached signed locators and PUTs only the rest.
Median of 3 runs each; each re-run follows its own killed load (untimed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    Run,
    archive_in_subprocess,
    emulator_process,
    machine,
    run,
    table_row,
    write_section,
)

# The real CLI killing itself (SIGKILL) once its Nth block is stored.
KILL_AFTER_PUTS = """
import os, signal, sys, threading
from keeptar.backends.arvados import ArvadosBackend
original = ArvadosBackend.put_block
after = int(sys.argv[1])
calls = [0]
lock = threading.Lock()
def put_block(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    with lock:
        calls[0] += 1
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
    return result
ArvadosBackend.put_block = put_block
sys.argv = ["keeptar", *sys.argv[2:]]
from keeptar.cli import main
main()
"""


def cached_blocks(cache_home: str) -> int:
    """Signed locators in the one resume cache file (its header line aside)."""
    files = list((Path(cache_home) / "keeptar" / "resume").glob("*.resume"))
    return sum(f.read_text().count("\n") - 1 for f in files)


def main() -> None:
    path = archive_in_subprocess()
    size_mib = path.stat().st_size / (1 << 20)
    blocks = -(-path.stat().st_size // (1 << 26))
    keeptar = [sys.executable, "-m", "keeptar"]  # this checkout's (PYTHONPATH below)
    with (
        emulator_process() as emulator,
        tempfile.TemporaryDirectory(prefix="keeptar-bench-resume-") as cache_home,
    ):
        os.environ.update(emulator.env)
        os.environ["KEEPTAR_BACKEND"] = "arvados"
        os.environ["XDG_CACHE_HOME"] = cache_home
        os.environ["PYTHONPATH"] = str(HERE.parent)
        run(["cat", str(path)])  # warm the page cache
        server = emulator.pid
        fresh = run(
            [*keeptar, "load", "--force", "--no-progress", str(path)],
            server=server,
        )
        resumed_runs: list[Run] = []
        cached: list[int] = []
        killed_args = ["load", "--resume", "--force", "--no-progress", str(path)]
        for _ in range(3):
            subprocess.run(
                [sys.executable, "-c", KILL_AFTER_PUTS, str(blocks * 9 // 10), *killed_args],
                capture_output=True,
                check=False,
            )
            cached.append(cached_blocks(cache_home))
            resumed_runs.append(
                run(
                    [*keeptar, "load", "--resume", "--force", "--no-progress", str(path)],
                    repeat=1,
                    server=server,
                )
            )
            if cached_blocks(cache_home):
                raise SystemExit("the resumed load left its cache behind")
        resumed = sorted(resumed_runs, key=lambda r: r.seconds)[1]

    lines = [
        f"### Resuming a killed `keeptar load` on Arvados ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine()}. Archive: {size_mib / 1024:.2f} GiB docker-v2 archive "
        f"({blocks} blocks of 64 MiB), page cache warm; the emulator runs in its own "
        "process on 127.0.0.1. Median of 3 runs each, side by side in one run of "
        "`benchmarks/bench_resume.py`. Each re-run follows a load killed (SIGKILL) once "
        f"{blocks * 9 // 10} of its blocks were stored; its cache then held "
        f"{', '.join(map(str, cached))} signed locators (a kill can beat the last entries).",
        "",
        "| command | seconds | MiB/s | peak RSS MiB | command CPU s | emulator CPU s |",
        "|---|---:|---:|---:|---:|---:|",
        table_row("keeptar load --force FILE (fresh: every PUT)", fresh, size_mib),
        table_row(
            "keeptar load --resume --force FILE after a kill at 90% (resumed)", resumed, size_mib
        ),
        "",
        f"- the re-run takes **{resumed.seconds / fresh.seconds:.2f}x** the time of a fresh "
        "load: it still reads and hashes every block it looks up (once), HEADs each cached "
        "locator, and uploads the rest. On the loopback emulator an upload costs little "
        "more than hashing, so a real network widens the gap.",
        "- keepstore reads a block to answer a HEAD (`BlockRead` into a discarding writer, "
        "checking its md5), and so does the emulator: its CPU column counts those reads.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if "--write" in sys.argv:
        write_section(report, "### Resuming a killed `keeptar load` on Arvados")


if __name__ == "__main__":
    main()
