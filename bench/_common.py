"""Helpers shared by the benchmarks: free ports, spawning ``gofannon serve``, waiting for /health."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import aiohttp

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_ok(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0, poll: float = 0.005) -> float:
    """Seconds until GET /health answers 200; raises if the process dies or the time runs out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if health_ok(port):
            return time.perf_counter() - start
        time.sleep(poll)
    raise TimeoutError(f"no 200 from /health on port {port} within {timeout} s")


def spawn_kernel(port: int, data_dir: str | None = None, **env: str) -> subprocess.Popen[bytes]:
    """``gofannon serve`` on the embedded default (SQLite in a temp data dir, in-process jobs)."""
    data_dir = data_dir or tempfile.mkdtemp(prefix="gofannon-bench-")
    full_env = {**os.environ, "GOFANNON_DATA_DIR": data_dir, "GOFANNON_LOG_LEVEL": "WARNING", **env}
    full_env.pop("REDIS_URL", None)
    return subprocess.Popen([sys.executable, "-m", "gofannon", "serve", "--port", str(port)],
                            env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


BARE_APP = """
import sys
from aiohttp import web

async def health(request):
    return web.json_response({"status": "healthy", "service": "user-service"})

app = web.Application()
app.router.add_get("/health", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def spawn_bare(port: int) -> subprocess.Popen[bytes]:
    """The baseline: a bare aiohttp hello-world app answering the same JSON."""
    return subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children_rss_mb(pid: int) -> float:
    """RSS of the process's descendants (sandbox pool children), for context."""
    total = 0.0
    kids: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += (task / "children").read_text().split()
        except OSError:
            pass
    for child in kids:
        try:
            total += rss_mb(int(child)) + children_rss_mb(int(child))
        except (OSError, ValueError):
            pass
    return total


# -- async helpers for benchmarks that drive the API as a signed-in user ---------------------------------
async def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until ``url`` answers (any status below 500), failing if the server process exits."""
    import asyncio

    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def login(base: str, session: "aiohttp.ClientSession", uid: str = "alice") -> str:
    """Sign in through the dev_stub flow as a browser does; returns the session cookie's value."""
    import re

    async with session.get(f"{base}/auth/login/dev_stub?return_to=/", allow_redirects=False) as r:
        picker = r.headers["Location"]
    async with session.get(picker if picker.startswith("http") else base + picker, allow_redirects=False) as r:
        html = await r.text()
    link = next(h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html) if f"code={uid}" in h)
    async with session.get(link if link.startswith("http") else base + link, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
    for cookie in session.cookie_jar:
        if cookie.key == "gofannon_sid":
            return cookie.value
    raise SystemExit("login did not set gofannon_sid")


async def personal_token(base: str, uid: str = "alice") -> str:
    """Sign in as ``uid`` and make a personal API token (what SDKs and scripts send as their key)."""
    import aiohttp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await login(base, session, uid)
        async with session.post(f"{base}/users/me/tokens", json={"name": "bench"}) as r:
            assert r.status == 201, await r.text()
            return (await r.json())["token"]  # type: ignore[no-any-return]
