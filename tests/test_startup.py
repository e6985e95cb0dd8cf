"""``gofannon serve`` start-up: what must be done before the first answer, and what waits until it listens.

How fast is measured in bench/startup.py. These tests hold what the start-up work may not lose while it is
reordered for speed: the first ``/health`` already names the sandbox tier (probed before listening, in the
background), the sandbox pool warms once the server listens without any request asking for it, a configured
tier that is unavailable still stops start-up with its reason, and request models, built on first use now,
validate the first bodies of a fresh process and appear in its API document.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import REPO, free_port

TIERS = {"bwrap", "landlock", "rlimit"}


def _request(port: int, path: str, body: Any = None) -> tuple[int, Any] | None:
    """``GET path``, or ``POST path`` with a JSON ``body``: (status, decoded JSON), or None if nothing listens."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read() or b"null")
        conn.close()
        return status, body
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for kid in kids:
            found += [kid, *_descendants(kid)]
    return found


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(**env: str) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        full = {**os.environ, "GOFANNON_DATA_DIR": str(tmp_path / f"data{len(procs)}"), **env}
        for name in ("REDIS_URL", "GOFANNON_WORKERS"):
            full.pop(name, None)
        proc = subprocess.Popen([sys.executable, "-m", "gofannon", "serve", "--port", str(port)], env=full, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc, port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _first_health(proc: subprocess.Popen[str], port: int) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"gofannon serve exited with {proc.returncode}: {err[-2000:]}")
        answer = _request(port, "/health")
        if answer is not None:
            assert answer[0] == 200
            return answer[1]
        time.sleep(0.02)
    pytest.fail("gofannon serve did not answer /health")


def test_the_first_health_names_the_tier_and_the_pool_warms_once_the_server_listens(spawn: Any) -> None:
    proc, port = spawn(GOFANNON_SANDBOX_POOL_SIZE="2")
    body = _first_health(proc, port)
    assert body["status"] == "healthy" and body["sandbox"] in TIERS
    # Nothing has asked for a sandbox child (GET /health does not): the pool starts its children by itself.
    deadline = time.monotonic() + 30
    while not _descendants(proc.pid):
        assert time.monotonic() < deadline, "no sandbox process was started after the server began listening"
        time.sleep(0.05)
    while True:
        answer = _request(port, "/health/ready")
        assert answer is not None
        sandbox = answer[1]["checks"]["sandbox"]
        if answer[0] == 200 and sandbox["warm"] == 2:
            break
        assert time.monotonic() < deadline, f"the pool did not warm: {answer}"
        time.sleep(0.1)
    assert sandbox["ok"] is True and sandbox["tier"] == body["sandbox"] and sandbox["size"] == 2


def test_an_unavailable_configured_tier_still_stops_start_up_with_its_reason(spawn: Any) -> None:
    proc, port = spawn(GOFANNON_SANDBOX_TIER="jail")
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("gofannon serve kept running with GOFANNON_SANDBOX_TIER=jail")
    assert proc.returncode != 0
    assert "GOFANNON_SANDBOX_TIER=jail: unknown sandbox tier 'jail'" in err
    assert _request(port, "/health") is None


def test_a_fresh_process_validates_its_first_bodies_and_documents_them(spawn: Any) -> None:
    proc, port = spawn(GOFANNON_SANDBOX_POOL_SIZE="0")
    _first_health(proc, port)
    # The first validated body of the process: the model's validator is built now.
    status, body = _request(port, "/log/client", {"eventType": "ui_error"}) or (None, None)
    assert status == 422
    assert [(e["loc"], e["msg"]) for e in body["detail"]] == [(["body", "message"], "Field required")]
    assert _request(port, "/log/client", {"event_type": "ui_error", "message": "boom", "level": "ERROR"}) == (
        202, {"status": "logged"})
    status, doc = _request(port, "/openapi.json") or (None, None)
    assert status == 200
    schema = doc["components"]["schemas"]["ClientLogPayload"]
    assert {"eventType", "message"} <= set(schema["properties"]) and "eventType" in schema["required"]


@pytest.mark.parametrize("choice, loop", [(None, "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_serve_runs_on_uvloop_unless_told_otherwise(spawn: Any, choice: str | None, loop: str) -> None:
    proc, port = spawn(GOFANNON_SANDBOX_POOL_SIZE="0", **({"GOFANNON_EVENT_LOOP": choice} if choice else {}))
    _first_health(proc, port)
    answer = _request(port, "/health/ready")
    assert answer is not None and answer[1]["loop"] == loop


def test_an_unknown_event_loop_stops_start_up_with_a_clear_message(spawn: Any) -> None:
    proc, port = spawn(GOFANNON_EVENT_LOOP="trio")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "GOFANNON_EVENT_LOOP='trio': use auto, uvloop or asyncio" in err
