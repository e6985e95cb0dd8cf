"""``gofannon serve --workers N``: N API processes on one port, supervised by the parent.

The parent runs no kernel. It reserves the port (a bound socket with ``SO_REUSEPORT`` that never listens,
so no other program can take the port while a child restarts), then starts N children, each a plain
``gofannon serve`` (``--workers 1``) that binds the same port with ``SO_REUSEPORT``: the kernel spreads
new connections over the children's sockets. A child that dies is started again, after a back-off that
grows while children keep dying young. SIGTERM or SIGINT is passed on to every child, which finishes
the requests it holds (aiohttp's graceful shutdown) before the parent exits.

With metrics on, the children share a ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary one unless the
operator set it), so a scrape of any of them, or of the parent's ``--metrics-port``, adds up all.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.settings import Settings

log = logging.getLogger("gofannon.supervisor")

#: A child that lived shorter than this counts as dying young (the back-off grows).
YOUNG_S = 10.0
MAX_BACKOFF_S = 30.0
#: How long children get to finish their requests after SIGTERM before they are killed.
DRAIN_S = 30.0


def parse_workers(raw: Any) -> int:
    """``GOFANNON_WORKERS`` / ``--workers``: a positive number, or ``auto`` for one per core."""
    text = str(raw).strip().lower()
    if text == "auto":
        return max(1, os.cpu_count() or 1)
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"GOFANNON_WORKERS={raw!r}: use a positive number or auto") from None
    if count < 1:
        raise ValueError(f"GOFANNON_WORKERS={raw!r}: use a positive number or auto")
    return count


def follow_parent() -> None:
    """In a supervised child: stop gracefully (SIGTERM to itself) if the supervisor disappears, even when
    it was killed outright and could not pass a signal on, so no orphan keeps serving the port."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("the supervisor (pid %d) is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="gofannon-follow-parent", daemon=True).start()


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to the port with SO_REUSEPORT, never listening: it keeps the port for our children."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"gofannon serve: cannot bind {host}:{port}: {exc}") from None
    return sock


@dataclass
class Slot:
    """One child position: its process, when it started, and its back-off."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0
    restarts: int = field(default=0)


class Supervisor:
    def __init__(self, settings: "Settings", host: str, port: int, workers: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.slots = [Slot(i) for i in range(workers)]
        self.stopping = False
        self._own_metrics_dir: str | None = None

    # -- children -----------------------------------------------------------------------------------
    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "gofannon", "serve", "--host", self.host, "--port", str(self.port),
                "--workers", "1", "--reuse-port"]

    def _start(self, slot: Slot) -> None:
        env = {**os.environ, "GOFANNON_WORKER_INDEX": str(slot.index)}
        slot.proc = subprocess.Popen(self._argv(), env=env)
        slot.started = time.monotonic()
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _reap(self, slot: Slot) -> None:
        """A child exited on its own: forget its live gauges and schedule its restart."""
        assert slot.proc is not None
        pid, code = slot.proc.pid, slot.proc.returncode
        lived = time.monotonic() - slot.started
        slot.proc = None
        self._mark_dead(pid)
        slot.backoff = min(MAX_BACKOFF_S, max(1.0, slot.backoff * 2)) if lived < YOUNG_S else 0.0
        slot.restart_at = time.monotonic() + slot.backoff
        slot.restarts += 1
        log.warning("worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                    slot.index, pid, code, lived, slot.backoff)

    def _mark_dead(self, pid: int) -> None:
        """Drop a dead child's live gauges (in flight) from the shared metrics; its counters stay counted."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            try:
                from prometheus_client import multiprocess
            except ImportError:  # pragma: no cover - metrics not installed
                return
            multiprocess.mark_process_dead(pid)

    # -- metrics --------------------------------------------------------------------------------------
    def _metrics_dir(self) -> None:
        """Children that count metrics share one multiprocess directory (a fresh one unless set)."""
        if not self.settings.metrics or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return
        self._own_metrics_dir = tempfile.mkdtemp(prefix="gofannon-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._own_metrics_dir

    # -- main loop ------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def run(self, metrics_port: int | None = None, start_metrics: Any = None) -> int:
        if self.settings.storage == "memory":
            raise SystemExit("gofannon serve: GOFANNON_STORAGE=memory keeps documents inside one process, so "
                             "several workers would not share users, sessions or budgets; use sqlite, postgres or redis")
        reserved = reserve_port(self.host, self.port)
        self._metrics_dir()
        if metrics_port is not None and start_metrics is not None:
            start_metrics(metrics_port, self.host, self.settings)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        print(f"gofannon serve: {len(self.slots)} workers on http://{self.host}:{self.port} "
              f"(supervisor pid {os.getpid()})", flush=True)
        try:
            for slot in self.slots:
                self._start(slot)
            while not self.stopping:
                now = time.monotonic()
                for slot in self.slots:
                    if slot.proc is not None and slot.proc.poll() is not None:
                        self._reap(slot)
                    if slot.proc is None and now >= slot.restart_at and not self.stopping:
                        self._start(slot)
                time.sleep(0.1)
            self._drain()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            reserved.close()
            if self._own_metrics_dir:
                shutil.rmtree(self._own_metrics_dir, ignore_errors=True)
        return 0

    def _drain(self) -> None:
        """SIGTERM every child (they finish their requests), then wait; kill what is left after DRAIN_S."""
        live = [slot.proc for slot in self.slots if slot.proc is not None and slot.proc.poll() is None]
        log.info("stopping %d workers", len(live))
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_S
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop within %.0f s; killing it", proc.pid, DRAIN_S)
                proc.kill()
                proc.wait()
