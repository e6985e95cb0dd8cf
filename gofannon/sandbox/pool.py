"""The warm pool of sandbox children and the confinement tiers.

A child runs the ``child`` package (``child/__main__.py``). Starting an interpreter costs tens of milliseconds,
so children are forked by a *zygote* (one pre-imported child per pool, inside the tier's confinement; it never
runs agent code), or,
as a fallback, started as fresh interpreters. The pool keeps ``GOFANNON_SANDBOX_POOL_SIZE`` of them ready and
waiting for their one request. Children are single-use: after a run the host kills the child and the pool
starts a replacement in the background.

All process creation happens in ONE long-lived spawner thread. That matters: bubblewrap's
``--die-with-parent`` is tied to the thread that forked it, so children started from short-lived executor
threads would die with those threads. The pool is loop-agnostic (``concurrent.futures`` hand-over), so runs
may come from any event loop or thread.

Tiers, strongest first: ``bwrap`` (namespaces: no network, read-only system, private /tmp, no host files
beyond the Python install), ``landlock`` (file-system access rules of the kernel's Landlock LSM), ``rlimit``
(limits only). Every tier also gets rlimits and the seccomp filter installed by the child itself.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import functools
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel
    from gofannon.settings import Settings

log = logging.getLogger("gofannon.sandbox")

TIERS: tuple[str, ...] = ("bwrap", "landlock", "rlimit")
CHILD_DIR = Path(__file__).with_name("child")  # the child's code: a standard-library-only package
CHILD_SCRIPT = CHILD_DIR / "__main__.py"
_SANDBOX_CHILD_DIR = "/opt/gofannon/child"  # where bwrap shows CHILD_DIR
_SANDBOX_CHILD_SCRIPT = f"{_SANDBOX_CHILD_DIR}/__main__.py"
_COMPONENT = "sandbox.pool"


def _readable(fds: list[int], timeout: float) -> list[int]:
    """The fds of ``fds`` ready to read: ``poll``, because ``select`` fails on fds above 1023, which a busy
    server reaches."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    try:
        return [fd for fd, _ in poller.poll(timeout * 1000)]
    except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
        return []


Fds5 = tuple[int, int, int, int, int]


def _child_pipes() -> tuple[Fds5, Fds5]:
    """The five pipes of a child: (the child's ends: stdin, events out, sync requests out, sync replies in,
    output), (the host's ends: to_w, from_r, sreq_r, srep_w, out_r)."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    sreq_r, sreq_w = os.pipe()
    srep_r, srep_w = os.pipe()
    out_r, out_w = os.pipe()
    return (to_r, from_w, sreq_w, srep_r, out_w), (to_w, from_r, sreq_r, srep_w, out_r)


def _landlock_rules(prefix: str, code: str, workdir: str) -> dict[str, list[str]]:
    """What a child may read (the Python install, its code, the system's libraries) and write (its workdir)."""
    readable = ["/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime", "/dev/urandom"]
    return {"read": [prefix, code, *readable], "write": [workdir, "/dev/null"]}


def _clean_env(home: str) -> dict[str, str]:
    """The whole environment of a child started outside bubblewrap: nothing of the service's."""
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}


def _direct_argv() -> list[str]:
    """A child outside bubblewrap: isolated mode, no site-packages, no bytecode writes."""
    return [_python()[0], "-I", "-S", "-B", str(CHILD_SCRIPT)]


# -- tiers --------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _python() -> tuple[str, str]:
    """The real interpreter (not the venv's symlink) and its installation prefix (resolved once)."""
    exe = os.path.realpath(sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def bwrap_argv(tmp_size_bytes: int) -> list[str]:
    """bubblewrap around the child: every namespace unshared, only the system and the Python install visible."""
    bwrap = shutil.which("bwrap") or "bwrap"
    exe, prefix = _python()
    argv = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"):
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    if not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--ro-bind", str(CHILD_DIR), _SANDBOX_CHILD_DIR,
             "--proc", "/proc", "--dev", "/dev",
             "--size", str(tmp_size_bytes), "--perms", "1777", "--tmpfs", "/tmp", "--chdir", "/tmp",
             "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--"]
    return argv + [exe, "-I", "-S", "-B", _SANDBOX_CHILD_SCRIPT]


def _bwrap_problem() -> str | None:
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    argv = bwrap_argv(1 << 20)
    argv = argv[: argv.index("--") + 1] + [_python()[0], "-I", "-S", "-c", "pass"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": "/usr/bin:/bin"}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if proc.returncode != 0:
        return f"bwrap cannot create a sandbox here: {proc.stderr.decode(errors='replace').strip()[:300]}"
    return None


def _landlock_problem() -> str | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) answers the ABI version
        abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError) as exc:
        return f"landlock unavailable: {exc}"
    if os.uname().machine not in ("x86_64", "aarch64"):
        return "landlock support is built for x86_64 and aarch64 only"
    if abi < 1:
        return f"the kernel does not offer Landlock (errno {ctypes.get_errno()})"
    return None


_PROBES: dict[str, str | None] = {}
_PROBE_LOCK = threading.Lock()


def tier_problem(tier: str) -> str | None:
    """Why ``tier`` cannot be used here, or None when it can (probed once per process)."""
    if tier not in TIERS:
        return f"unknown sandbox tier {tier!r} (choose one of: auto, {', '.join(TIERS)})"
    with _PROBE_LOCK:
        if tier not in _PROBES:
            _PROBES[tier] = {"bwrap": _bwrap_problem, "landlock": _landlock_problem,
                             "rlimit": lambda: None}[tier]()
        return _PROBES[tier]


def choose_tier(setting: str) -> str:
    """The tier to use for ``GOFANNON_SANDBOX_TIER``; raises RuntimeError when the named tier is unavailable."""
    wanted = (setting or "auto").strip().lower()
    if wanted == "auto":
        for tier in TIERS:
            if tier_problem(tier) is None:
                return tier
        raise RuntimeError("no sandbox tier is available")  # pragma: no cover - rlimit always is
    problem = tier_problem(wanted)
    if problem is not None:
        raise RuntimeError(f"GOFANNON_SANDBOX_TIER={setting}: {problem}")
    return wanted


def probe_in_background(setting: str) -> None:
    """Begin the probes ``choose_tier(setting)`` needs in a thread, so that ``start`` finds them done.

    The bwrap probe runs an interpreter in a sandbox (~30 ms, spent in another process): begun when the API's
    kernel is made, it overlaps the import of the route modules instead of delaying the first request. A probe
    that finds the tier unavailable is cached like any other, and ``start`` raises it.
    """

    def probe() -> None:
        try:
            choose_tier(setting)
        except Exception:  # noqa: BLE001 - start() raises it: from the cached probe, or by probing again
            pass

    threading.Thread(target=probe, name="sandbox-tier-probe", daemon=True).start()


# -- children -----------------------------------------------------------------------------------------------------
@dataclass
class Child:
    """One started child and the host ends of its pipes."""

    proc: Any  # subprocess.Popen, or a _ZygoteProc with the same poll/kill/wait
    to_child: int  # host → child frames (the child's stdin)
    from_child: int  # child → host frames
    sync_requests: int  # child → host blocking data_store requests
    sync_replies: int  # host → child replies to those
    output: int  # the child's raw fds 1 and 2 (crash messages, os.write)
    tmpdir: str | None = None
    closed: set[int] = field(default_factory=set)

    def fds(self) -> tuple[int, ...]:
        return self.to_child, self.from_child, self.sync_requests, self.sync_replies, self.output

    def close_fds(self) -> None:
        for fd in self.fds():
            if fd not in self.closed:
                self.closed.add(fd)
                try:
                    os.close(fd)
                except OSError:
                    pass


class _ZygoteProc:
    """A zygote-forked child, with the part of Popen's interface the pool and the runs use."""

    def __init__(self, zygote: "Zygote", pid: int) -> None:
        self.zygote = zygote
        self.pid = pid

    def poll(self) -> int | None:
        return self.zygote.exit_status(self.pid)

    def kill(self) -> None:
        self.zygote.kill(self.pid)

    def wait(self, timeout: float | None = None) -> int:
        return self.zygote.wait(self.pid, timeout)


class Zygote:
    """A pre-imported template process that forks the children on request.

    Host and zygote talk over a SOCK_SEQPACKET pair: ``fork`` (the child's five pipe ends ride along as
    SCM_RIGHTS) answered by its pid, ``kill``, and unprompted ``exit`` reports. Closing the socket ends the
    zygote, which kills its children; each child also dies with the zygote (PR_SET_PDEATHSIG).
    """

    def __init__(self, argv: list[str], base_cfg: dict[str, Any], *, cwd: str, env: dict[str, str],
                 new_session: bool) -> None:
        host, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = host
        self.log = tempfile.TemporaryFile()
        cfg = {"zygote": True, "control": theirs.fileno(), "child": base_cfg}
        try:
            self.proc = subprocess.Popen(argv + [json.dumps(cfg)], stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log, pass_fds=(theirs.fileno(),), cwd=cwd, env=env,
                                         close_fds=True, start_new_session=new_session)
        finally:
            theirs.close()
        self._lock = threading.Condition()
        self._next = 0
        self._replies: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self.broken: str | None = None
        host.settimeout(30)
        try:
            hello = host.recv(65536)
        except OSError:
            hello = b""
        if not hello or "ready" not in json.loads(hello):
            self.close()
            self.log.seek(0)
            raise RuntimeError(f"the sandbox zygote did not start: {self.log.read()[-2000:].decode(errors='replace')}")
        host.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="sandbox-zygote", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.broken is None and self.proc.poll() is None

    def fork(self, fds: tuple[int, ...], cfg: dict[str, Any]) -> _ZygoteProc:
        with self._lock:
            self._next += 1
            rid = self._next
        socket.send_fds(self.sock, [json.dumps({"cmd": "fork", "id": rid, "cfg": cfg}).encode()], list(fds))
        with self._lock:
            if not self._lock.wait_for(lambda: rid in self._replies or self.broken is not None, 30):
                raise RuntimeError("the sandbox zygote did not answer")
            if rid not in self._replies:
                raise RuntimeError(f"the sandbox zygote stopped: {self.broken}")
            return _ZygoteProc(self, self._replies.pop(rid))

    def kill(self, pid: int) -> None:
        if self.broken is None:
            try:
                self.sock.send(json.dumps({"cmd": "kill", "pid": pid}).encode())
            except OSError:
                pass

    def exit_status(self, pid: int) -> int | None:
        with self._lock:
            if pid in self._exits:
                return self._exits[pid]
            return -9 if self.broken is not None else None

    def wait(self, pid: int, timeout: float | None = None) -> int:
        with self._lock:
            if not self._lock.wait_for(lambda: pid in self._exits or self.broken is not None, timeout):
                raise subprocess.TimeoutExpired(f"sandbox child {pid}", timeout or 0)
            return self._exits.pop(pid, -9)

    def _read_loop(self) -> None:
        while True:
            try:
                msg = self.sock.recv(65536)
            except OSError as exc:
                msg, reason = b"", str(exc)
            else:
                reason = "the zygote exited"
            if not msg:
                with self._lock:
                    self.broken = reason
                    self._lock.notify_all()
                return
            data = json.loads(msg)
            with self._lock:
                if "exit" in data:
                    self._exits[int(data["exit"])] = int(data["status"])
                elif "id" in data:
                    self._replies[int(data["id"])] = int(data["pid"])
                self._lock.notify_all()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zygote that ignores its closed socket
            kill_process_tree(self.proc.pid)
            self.proc.wait(10)
        self.log.close()


class SandboxPool:
    """Warm, single-use children, started by one spawner thread; reaped by one reaper thread.

    The spawner starts up to ``parallel`` children at once and multiplexes their start-up with ``select``;
    a child is handed out only after its ``ready`` frame (imports done, limits and seccomp filter in place).
    """

    def __init__(self, settings: "Settings", tier: str, *, mode: str = "auto") -> None:
        self.settings = settings
        self.tier = tier
        if mode == "auto":
            # bwrap children of one zygote share its namespaces: they need Landlock to keep out of each other's dirs
            mode = "zygote" if tier != "bwrap" or tier_problem("landlock") is None else "spawn"
        self.mode = mode
        self.zygote: Zygote | None = None
        self._serial = 0
        #: Children that became ready, and their summed start time (spawn to ``ready``): metrics read them.
        self.children_started = 0
        self.child_start_seconds = 0.0
        self.size = max(0, int(settings.sandbox_pool_size))
        self.parallel = max(2, os.cpu_count() or 2)
        self.limits = {"memory_mb": settings.sandbox_memory_mb, "file_mb": settings.sandbox_file_mb,
                       "open_files": settings.sandbox_open_files, "cpu_s": settings.sandbox_cpu_s}
        self._ready: collections.deque[Child] = collections.deque()
        self._waiting: collections.deque[concurrent.futures.Future[Child]] = collections.deque()
        self._starting: dict[int, tuple[Child, bytearray, float]] = {}  # from_child fd → (child, bytes, deadline)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._reap: collections.deque[Child] = collections.deque()
        self._reap_cond = threading.Condition()
        self._closed = False
        self._spawner = threading.Thread(target=self._spawn_loop, name="sandbox-spawner", daemon=True)
        self._reaper = threading.Thread(target=self._reap_loop, name="sandbox-reaper", daemon=True)
        self._spawner.start()
        self._reaper.start()

    # -- public ---------------------------------------------------------------------------------------------------
    @property
    def warm(self) -> int:
        return len(self._ready)

    @property
    def alive(self) -> bool:
        """Open and still able to start children (readiness probes ask)."""
        return not self._closed and self._spawner.is_alive()

    def acquire(self) -> concurrent.futures.Future[Child]:
        """A child for one run: a warm one if any, else the next one to finish starting."""
        fut: concurrent.futures.Future[Child] = concurrent.futures.Future()
        dead: list[Child] = []
        with self._lock:
            if self._closed:
                fut.set_exception(RuntimeError("the sandbox pool is closed"))
                return fut
            while self._ready and self._ready[0].proc.poll() is not None:
                dead.append(self._ready.popleft())  # e.g. its zygote died: never hand out a corpse
            if self._ready:
                fut.set_result(self._ready.popleft())
            else:
                self._waiting.append(fut)
        for child in dead:
            self.discard(child)
        self._wake()
        return fut

    def discard(self, child: Child) -> None:
        """Kill a used child and clean up after it (in the reaper thread)."""
        with self._reap_cond:
            self._reap.append(child)
            self._reap_cond.notify()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for fut in waiting:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError("the sandbox pool is closed"))
        self._wake()
        self._spawner.join(10)
        with self._lock:
            leftovers = list(self._ready) + [c for c, _, _ in self._starting.values()]
            self._ready.clear()
            self._starting.clear()
        for child in leftovers:
            self.discard(child)
        with self._reap_cond:
            self._reap_cond.notify_all()
        self._reaper.join(10)
        if self.zygote is not None:
            self.zygote.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (or closed)

    # -- spawning ---------------------------------------------------------------------------------------------------
    def _wanted(self) -> int:
        """Children to start now: fill the pool and serve waiting runs, at most ``parallel`` starting."""
        need = self.size + len(self._waiting) - len(self._ready) - len(self._starting)
        return max(0, min(need, self.parallel - len(self._starting)))

    def _spawn_loop(self) -> None:
        failures = 0
        while True:
            with self._lock:
                if self._closed:
                    return
                wanted = self._wanted()
            for _ in range(wanted):
                try:
                    child = self.spawn()
                except Exception as exc:
                    log.exception("starting a sandbox child failed")
                    self._fail_one(exc)
                    time.sleep(0.5)
                    break
                with self._lock:
                    self._starting[child.from_child] = (child, bytearray(), time.monotonic() + 30)
            fds = [self._wake_r, *self._starting]
            try:
                readable = _readable(fds, 1.0)
            except OSError:  # pragma: no cover - a closed fd during shutdown
                readable = []
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            now = time.monotonic()
            for fd, (child, buf, deadline) in list(self._starting.items()):
                problem = None
                if fd in readable:
                    chunk = os.read(fd, 4096)
                    buf += chunk
                    if len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                        if json.loads(bytes(buf[4:])).get("t") == "ready":
                            with self._lock:
                                del self._starting[fd]
                                self.children_started += 1
                                self.child_start_seconds += time.monotonic() - (deadline - 30)
                            self._deliver(child)
                            failures = 0
                            continue
                        problem = "it sent an unexpected frame"
                    elif not chunk:
                        problem = self._output_tail(child) or f"exit status {self._status(child)}"
                elif now > deadline:
                    problem = "it did not start within 30 s"
                if problem is not None:
                    with self._lock:
                        del self._starting[fd]
                    self.discard(child)
                    failures += 1
                    log.error("a sandbox child failed to start: %s", problem)
                    self._fail_one(RuntimeError(f"the sandbox child failed to start: {problem}"))
                    if failures > 3:
                        time.sleep(min(5.0, 0.2 * failures))  # do not spin on a broken setup

    def _deliver(self, child: Child) -> None:
        while True:
            with self._lock:
                if self._closed:
                    break
                if not self._waiting:
                    self._ready.append(child)
                    return
                fut = self._waiting.popleft()
            if fut.set_running_or_notify_cancel():
                fut.set_result(child)
                return
        self.discard(child)

    def _fail_one(self, exc: BaseException) -> None:
        with self._lock:
            fut = self._waiting.popleft() if self._waiting else None
        if fut is not None and fut.set_running_or_notify_cancel():
            fut.set_exception(exc)

    @staticmethod
    def _status(child: Child) -> int | str:
        try:
            return int(child.proc.wait(5))
        except Exception:  # noqa: BLE001
            return "unknown"

    @staticmethod
    def _output_tail(child: Child) -> str:
        output = b""
        while _readable([child.output], 0.5):
            chunk = os.read(child.output, 65536)
            if not chunk:
                break
            output = (output + chunk)[-2000:]
        return output.decode(errors="replace").strip()

    def spawn(self) -> Child:
        """Start one child (the spawner loop then waits for its ``ready`` frame)."""
        if self.mode == "zygote":
            try:
                return self._fork_child()
            except Exception:
                log.exception("the sandbox zygote failed; starting children directly from now on")
                self.mode = "spawn"
        return self._spawn_child()

    def _zygote_launch(self) -> Zygote:
        base = {"limits": self.limits, "tier": self.tier}
        if self.tier == "bwrap":
            tmp = max(8 * self.limits["file_mb"], 64) * 1024 * 1024
            return Zygote(bwrap_argv(tmp), base, cwd="/", env={"PATH": "/usr/bin:/bin"}, new_session=False)
        home = tempfile.gettempdir()
        return Zygote(_direct_argv(), base, cwd=home, env=_clean_env(home), new_session=True)

    def _fork_child(self) -> Child:
        zygote = self.zygote
        if zygote is None or not zygote.alive:
            if zygote is not None:
                zygote.close()
            zygote = self.zygote = self._zygote_launch()
        self._serial += 1
        # A rehearsal in the new child moves copy-on-write faults off the run's path (lower latency) but costs
        # CPU; when runs are already waiting for children, throughput matters more, so skip it.
        cfg: dict[str, Any] = {"rehearse": not self._waiting}
        tmpdir: str | None = None
        _, prefix = _python()
        if self.tier == "bwrap":
            workdir = f"/tmp/run-{self._serial}"
            cfg.update(workdir=workdir, workdir_create=True,
                       landlock=_landlock_rules(prefix, _SANDBOX_CHILD_DIR, workdir))
        else:
            tmpdir = tempfile.mkdtemp(prefix="gofannon-sandbox-")
            cfg["workdir"] = tmpdir
            if self.tier == "landlock":
                cfg["landlock"] = _landlock_rules(prefix, str(CHILD_DIR), tmpdir)
        return self._launch(lambda ends: zygote.fork(ends, cfg), tmpdir)

    def _spawn_child(self) -> Child:
        """Start one child as a fresh interpreter."""
        cfg: dict[str, Any] = {"limits": self.limits, "tier": self.tier}
        tmpdir: str | None = None
        if self.tier == "bwrap":
            argv = bwrap_argv(max(2 * self.limits["file_mb"], 16) * 1024 * 1024)
            cwd = "/"
            env = {"PATH": "/usr/bin:/bin"}
        else:
            tmpdir = tempfile.mkdtemp(prefix="gofannon-sandbox-")
            argv = _direct_argv()
            cwd = tmpdir
            env = _clean_env(tmpdir)
            cfg["workdir"] = tmpdir
            if self.tier == "landlock":
                cfg["landlock"] = _landlock_rules(_python()[1], str(CHILD_DIR), tmpdir)

        def start(ends: Fds5) -> subprocess.Popen[bytes]:
            to_r, from_w, sreq_w, srep_r, out_w = ends
            cfg.update(out=from_w, sync_out=sreq_w, sync_in=srep_r)
            return subprocess.Popen(argv + [json.dumps(cfg)], stdin=to_r, stdout=out_w, stderr=out_w,
                                    pass_fds=(from_w, sreq_w, srep_r), cwd=cwd, env=env, close_fds=True,
                                    start_new_session=self.tier != "bwrap")

        return self._launch(start, tmpdir)

    @staticmethod
    def _launch(start: Callable[[Fds5], Any], tmpdir: str | None) -> Child:
        """Make the child's pipes and ``start(child_ends)`` the process; on failure leave nothing behind (pipes
        closed, ``tmpdir`` removed). The child's ends are closed here either way: the process has its copies."""
        try:
            child_ends, host_ends = _child_pipes()
        except BaseException:
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        try:
            proc = start(child_ends)
        except BaseException:
            for fd in host_ends:
                os.close(fd)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        return Child(proc, *host_ends, tmpdir)

    # -- reaping ------------------------------------------------------------------------------------------------------
    def _reap_loop(self) -> None:
        while True:
            with self._reap_cond:
                while not self._reap and not self._closed:
                    self._reap_cond.wait()
                if not self._reap and self._closed:
                    return
                child = self._reap.popleft()
            self._finish(child)

    @staticmethod
    def _finish(child: Child) -> None:
        try:
            if child.proc.poll() is None:
                if isinstance(child.proc, subprocess.Popen):
                    kill_process_tree(child.proc.pid)
                else:
                    child.proc.kill()
            child.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - a process that will not die
            log.warning("sandbox child %s did not exit", child.proc.pid)
        child.close_fds()
        if child.tmpdir:
            shutil.rmtree(child.tmpdir, ignore_errors=True)


def kill_process_tree(pid: int) -> None:
    """SIGKILL a process and its children, children first.

    For bubblewrap the child is the sandbox's pid-1 monitor: killed from outside its namespace it takes the
    whole namespace with it, whereas killing only the outer bwrap can leave that monitor behind.
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(p) for p in fh.read().split()]
    except (OSError, ValueError):
        children = []
    for victim in (*children, pid):
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- kernel service -----------------------------------------------------------------------------------------------
def get_pool(kernel: "Kernel") -> SandboxPool:
    """The kernel's pool, created on first use (``start`` normally does it and picks the tier)."""
    tier = getattr(kernel, "sandbox_tier", None)
    if tier is None:
        tier = choose_tier(kernel.settings.sandbox_tier)
        setattr(kernel, "sandbox_tier", tier)
    return kernel.component(_COMPONENT, lambda: SandboxPool(kernel.settings, tier))


async def start(kernel: "Kernel") -> None:
    """Pick the tier (refusing to start when the configured one is unavailable) and warm the pool, or leave
    the warm-up to ``serving`` when the host defers it (``Kernel.defer_warmup``)."""
    import asyncio

    tier = await asyncio.to_thread(choose_tier, kernel.settings.sandbox_tier)
    setattr(kernel, "sandbox_tier", tier)
    log.info("sandbox tier: %s", tier)
    if kernel.role != "cli" and not kernel.defer_warmup:
        get_pool(kernel)


def serving(kernel: "Kernel") -> None:
    """The server listens: warm the pool now. Starting interpreters takes both cores for a moment, which
    would otherwise delay the answers to the first requests (``/health`` among them)."""
    if kernel.role != "cli":
        get_pool(kernel)


async def stop(kernel: "Kernel") -> None:
    if kernel.has_component(_COMPONENT):
        import asyncio

        await asyncio.to_thread(get_pool(kernel).close)


def pool_stats(kernel: "Kernel") -> dict[str, Any]:
    """Small introspection for tests and /health-like displays."""
    pool = get_pool(kernel)
    return {"tier": pool.tier, "warm": pool.warm, "size": pool.size}
