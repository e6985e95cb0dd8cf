"""Start-up: time from spawning ``gofannon serve`` to the first 200 on /health, and idle RSS.

Targets: first 200 within 0.5 s, idle RSS of the API process at most 60 MB. Each run uses a fresh
data dir (so it includes creating the SQLite database and generating secrets). Usage:

    .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import children_rss_mb, free_port, rss_mb, spawn_kernel, stop, wait_healthy  # noqa: E402

TARGET_START_S = 0.5
TARGET_RSS_MB = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds to idle before reading RSS")
    args = parser.parse_args()
    # An installed package has its bytecode compiled; a shell with PYTHONDONTWRITEBYTECODE=1 would otherwise
    # make every run recompile the kernel and measure the compiler instead of the start-up.
    import compileall

    root = Path(__file__).resolve().parent.parent
    for folder in ("gofannon", "plugins"):
        compileall.compile_dir(str(root / folder), quiet=1)
    starts, rss, child_rss = [], [], []
    for i in range(args.runs):
        port = free_port()
        proc = spawn_kernel(port)
        try:
            starts.append(wait_healthy(port, proc))
            time.sleep(args.idle)
            rss.append(rss_mb(proc.pid))
            child_rss.append(children_rss_mb(proc.pid))
        finally:
            stop(proc)
        print(f"run {i + 1}: first 200 after {starts[-1] * 1000:.0f} ms, idle RSS {rss[-1]:.1f} MB "
              f"(+ {child_rss[-1]:.1f} MB in child processes)", flush=True)
    med_start, med_rss = statistics.median(starts), statistics.median(rss)
    print(f"start-up to first 200 on /health: median {med_start * 1000:.0f} ms, best {min(starts) * 1000:.0f} ms "
          f"(target <= {TARGET_START_S * 1000:.0f} ms) {'OK' if med_start <= TARGET_START_S else 'OVER'}")
    print(f"idle RSS of the API process: median {med_rss:.1f} MB (target <= {TARGET_RSS_MB:.0f} MB) "
          f"{'OK' if med_rss <= TARGET_RSS_MB else 'OVER'}; child processes median "
          f"{statistics.median(child_rss):.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
