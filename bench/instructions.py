"""Instructions executed per `/v1` chat completion, counted by callgrind: a deterministic figure for A/B of code.

Usage: .venv/bin/python bench/instructions.py [--calls 300] [--stream] [--tree DIR] [--env NAME=VALUE ...]

Timings on this shared 2-core machine move by tens of percent between runs; the number of instructions the
kernel executes per call hardly does (two runs of one tree agree within ~0.2% on an otherwise idle machine; other
work running alongside changes timing-dependent paths, and the count, by a few percent). So a change to the request path can
be judged here first, then confirmed with `bench/gateway.py`.

Starts the instant upstream of `bench/gateway.py`, then `gofannon serve` (from `--tree`, default this checkout) under
`valgrind --tool=callgrind --instr-atstart=no`, signs in, makes a personal token, warms up with 50 calls, switches
counting on (`callgrind_control -i on`), makes `--calls` sequential non-streamed calls (streamed ones with `--stream`, each read to its end), and prints the instructions
per call by thread: the event loop's (the answer's path, and what runs after it on the loop) and the others' (the
SQLite store thread). Under valgrind everything runs ~50x slower, so timing-dependent behaviour changes: charges do
not gather (each call is far apart), and the sandbox pool is off. Needs valgrind (`apt-get install valgrind`).
For where the instructions go: `callgrind_annotate --inclusive=yes <file>` on the files it leaves in `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, free_port, personal_token, stop, wait_up  # noqa: E402
from gateway import BODY, PY, UPSTREAM, latency, ttfc  # noqa: E402


def totals(out: Path) -> dict[int, int]:
    """Instructions counted per thread (callgrind writes one file per thread with --separate-threads=yes)."""
    found: dict[int, int] = {}
    for path in out.parent.glob(out.name + "*"):
        thread, total = None, 0
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("thread:"):
                thread = int(line.split()[1])
            elif line.startswith("totals:"):
                total = int(line.split()[1])
        if thread is not None and total:
            found[thread] = found.get(thread, 0) + total
    return found


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--tree", default=str(REPO), help="the checkout whose kernel to count (another commit, say)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the kernel (repeatable)")
    ap.add_argument("--stream", action="store_true", help="count streamed calls (read to their end)")
    ap.add_argument("--out", default=None, help="directory for callgrind's files (default: a temporary one)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    tmp = Path(tempfile.mkdtemp(prefix="gofannon-instr-"))
    out_dir = Path(args.out or tmp / "callgrind")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "callgrind.out"
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen([PY, "-c", UPSTREAM, str(up_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    kernel = None
    try:
        await wait_up(f"http://127.0.0.1:{up_port}/health", upstream)
        (tmp / "conf" / "catalog").mkdir(parents=True)
        (tmp / "conf" / "catalog" / "bench.json").write_text(json.dumps({
            "slug": "bench", "plugin": "openai_compat", "base_url": f"http://127.0.0.1:{up_port}/v1",
            "models": {"m": {"pricing": {"input_cost_per_token": 1e-9, "output_cost_per_token": 2e-9}}}}))
        env = {**os.environ, "APP_ENV": "local", "GOFANNON_DATA_DIR": str(tmp / "data"),
               "GOFANNON_CONFIG_DIR": str(tmp / "conf"), "GOFANNON_STORAGE": "sqlite", "GOFANNON_LOG_LEVEL": "WARNING",
               "GOFANNON_DEFAULT_ALLOWANCE": "1000000", "GOFANNON_SANDBOX_POOL_SIZE": "0", "PYTHONPATH": args.tree,
               **dict(item.split("=", 1) for item in args.env)}
        env.pop("REDIS_URL", None)
        kernel = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
             f"--callgrind-out-file={out}", PY, "-m", "gofannon", "serve", "--port", str(port)],
            env=env, cwd=args.tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        await wait_up(f"{base}/health", kernel, timeout=600)  # valgrind starts Python ~50x slower
        token = await personal_token(base)
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{base}/v1/chat/completions"
        calls = ttfc if args.stream else latency
        await calls(url, headers, 50, f"bench/{BODY['model']}", warm=0)
        subprocess.run(["callgrind_control", "-i", "on", str(kernel.pid)], check=True, capture_output=True)
        await calls(url, headers, args.calls, f"bench/{BODY['model']}", warm=0)
        await asyncio.sleep(1)  # what the last calls left for the loop to do after their answers
        subprocess.run(["callgrind_control", "-i", "off", str(kernel.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(kernel.pid)], check=True, capture_output=True)
        kernel.send_signal(signal.SIGINT)
        kernel.wait(120)
        counts = totals(out)
        if not counts:
            raise SystemExit("callgrind counted nothing")
        main_thread = min(counts)
        print(f"{args.tree} {' '.join(args.env)}: {args.calls} sequential /v1 calls{' (streamed)' if args.stream else ''}")
        print(f"  event loop's thread: {counts[main_thread] / args.calls / 1000:8.0f}k instructions per call")
        print(f"  other threads      : {sum(v for k, v in counts.items() if k != main_thread) / args.calls / 1000:8.0f}k")
        print(f"  callgrind files in {out_dir}")
    finally:
        if kernel is not None and kernel.poll() is None:
            stop(kernel)
        stop(upstream)


if __name__ == "__main__":
    asyncio.run(main())
