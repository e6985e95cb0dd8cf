"""Start-up: time from spawning ``gofannon serve`` to the first 200 on /health, and idle RSS.

Targets: first 200 within 0.5 s, idle RSS of the API process at most 60 MB. Each run uses a fresh
data dir (so it includes creating the SQLite database and generating secrets).

Baseline, in the same runs (interleaved): a bare aiohttp hello-world app (``_common.spawn_bare``), which pays
the interpreter's start and aiohttp's import (its TLS contexts included) and nothing else. The machine's
speed moves both; the difference is what the kernel adds. Also printed: the server's CPU time when it
answered (user + system, 10 ms ticks), which other load on the machine disturbs less than the wall clock.
``--compare DIR`` also starts the kernel of another checkout in the same runs (an older commit: ``git clone
. /tmp/old && git -C /tmp/old checkout <commit> && ln -s plugins /tmp/old/gofannon_plugins``), on this venv.
Usage:

    .venv/bin/python bench/startup.py [--runs 7] [--compare /tmp/old]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (children_rss_mb, free_port, rss_mb, spawn_bare, spawn_kernel, stop,  # noqa: E402
                     wait_healthy)

TARGET_START_S = 0.5
TARGET_RSS_MB = 60.0


def cpu_ms(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def spawn_other(port: int, tree: Path) -> subprocess.Popen[bytes]:
    """``gofannon serve`` of another checkout, as ``spawn_kernel`` starts this one's: run from that directory,
    whose ``gofannon`` (and ``gofannon_plugins``, when linked) then come first on ``sys.path``."""
    env = {**os.environ, "GOFANNON_DATA_DIR": tempfile.mkdtemp(prefix="gofannon-bench-"),
           "GOFANNON_LOG_LEVEL": "WARNING", "PYTHONPATH": str(tree)}
    env.pop("REDIS_URL", None)
    return subprocess.Popen([sys.executable, "-m", "gofannon", "serve", "--port", str(port)], env=env, cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_answer(proc: subprocess.Popen[bytes], port: int) -> tuple[float, float]:
    """Seconds from spawn to the first 200 on /health, and the server's CPU milliseconds by then."""
    seconds = wait_healthy(port, proc)
    return seconds, cpu_ms(proc.pid)


def timed_start(spawn: Callable[[int], "subprocess.Popen[bytes]"]) -> tuple[float, float]:
    """(seconds, CPU seconds) until the server ``spawn(port)`` starts answers its first 200; then it is stopped."""
    port = free_port()
    proc = spawn(port)
    try:
        return first_answer(proc, port)
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds to idle before reading RSS")
    parser.add_argument("--compare", default=None, help="another checkout whose kernel to start in the same runs")
    args = parser.parse_args()
    # An installed package has its bytecode compiled; a shell with PYTHONDONTWRITEBYTECODE=1 would otherwise
    # make every run recompile the kernel and measure the compiler instead of the start-up.
    import compileall

    root = Path(__file__).resolve().parent.parent
    for tree in (root, *([Path(args.compare)] if args.compare else [])):
        for folder in ("gofannon", "plugins"):
            compileall.compile_dir(str(tree / folder), quiet=1)
    starts, cpus, rss, child_rss, bare_starts, bare_cpus = [], [], [], [], [], []
    other_starts, other_cpus = [], []
    for i in range(args.runs):
        if args.compare:
            seconds, cpu = timed_start(lambda port: spawn_other(port, Path(args.compare).resolve()))
            other_starts.append(seconds)
            other_cpus.append(cpu)
        seconds, cpu = timed_start(spawn_bare)
        bare_starts.append(seconds)
        bare_cpus.append(cpu)
        port = free_port()
        proc = spawn_kernel(port)
        try:
            seconds, cpu = first_answer(proc, port)
            starts.append(seconds)
            cpus.append(cpu)
            time.sleep(args.idle)
            rss.append(rss_mb(proc.pid))
            child_rss.append(children_rss_mb(proc.pid))
        finally:
            stop(proc)
        print(f"run {i + 1}: first 200 after {starts[-1] * 1000:.0f} ms ({cpus[-1]:.0f} ms CPU), bare aiohttp "
              f"{bare_starts[-1] * 1000:.0f} ms ({bare_cpus[-1]:.0f} ms CPU); idle RSS {rss[-1]:.1f} MB "
              f"(+ {child_rss[-1]:.1f} MB in child processes)", flush=True)
    med_start, med_bare, med_rss = statistics.median(starts), statistics.median(bare_starts), statistics.median(rss)
    print(f"start-up to first 200 on /health: median {med_start * 1000:.0f} ms, best {min(starts) * 1000:.0f} ms "
          f"(target <= {TARGET_START_S * 1000:.0f} ms) {'OK' if med_start <= TARGET_START_S else 'OVER'}; "
          f"CPU median {statistics.median(cpus):.0f} ms")
    print(f"bare aiohttp app, same runs: median {med_bare * 1000:.0f} ms, best {min(bare_starts) * 1000:.0f} ms; "
          f"CPU median {statistics.median(bare_cpus):.0f} ms. The kernel adds {(med_start - med_bare) * 1000:.0f} ms "
          f"(wall) / {statistics.median(cpus) - statistics.median(bare_cpus):.0f} ms (CPU) to it: "
          f"{med_start / med_bare:.2f}x")
    if args.compare:
        med_other = statistics.median(other_starts)
        print(f"{args.compare}, same runs: median {med_other * 1000:.0f} ms, best {min(other_starts) * 1000:.0f} ms; "
              f"CPU median {statistics.median(other_cpus):.0f} ms ({med_other / med_bare:.2f}x the bare app)")
    print(f"idle RSS of the API process: median {med_rss:.1f} MB (target <= {TARGET_RSS_MB:.0f} MB) "
          f"{'OK' if med_rss <= TARGET_RSS_MB else 'OVER'}; child processes median "
          f"{statistics.median(child_rss):.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
