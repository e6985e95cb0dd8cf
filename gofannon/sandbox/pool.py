"""The warm pool of sandbox children and the confinement tiers.

A child is a fresh Python interpreter running ``child.py``; starting one costs tens of milliseconds, so the
pool keeps ``GOFANNON_SANDBOX_POOL_SIZE`` of them started and waiting for their one request. Children are
single-use: after a run the host kills the child and the pool starts a replacement in the background.

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
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel
    from gofannon.settings import Settings

log = logging.getLogger("gofannon.sandbox")

TIERS: tuple[str, ...] = ("bwrap", "landlock", "rlimit")
CHILD_SCRIPT = Path(__file__).with_name("child.py")
_SANDBOX_CHILD_PATH = "/opt/gofannon/child.py"
_COMPONENT = "sandbox.pool"


# -- tiers --------------------------------------------------------------------------------------------------------
def _python() -> tuple[str, str]:
    """The real interpreter (not the venv's symlink) and its installation prefix."""
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
    argv += ["--ro-bind", str(CHILD_SCRIPT), _SANDBOX_CHILD_PATH,
             "--proc", "/proc", "--dev", "/dev",
             "--size", str(tmp_size_bytes), "--perms", "1777", "--tmpfs", "/tmp", "--chdir", "/tmp",
             "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--"]
    return argv + [exe, "-I", "-S", "-B", _SANDBOX_CHILD_PATH]


def _bwrap_problem() -> str | None:
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    argv = bwrap_argv(1 << 20)
    argv = argv[: argv.index("--") + 1] + [_python()[0], "-I", "-S", "-c", "pass"]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
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


# -- children -----------------------------------------------------------------------------------------------------
@dataclass
class Child:
    """One started child and the host ends of its pipes."""

    proc: subprocess.Popen[bytes]
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


class SandboxPool:
    """Warm, single-use children, started by one spawner thread; reaped by one reaper thread."""

    def __init__(self, settings: "Settings", tier: str) -> None:
        self.settings = settings
        self.tier = tier
        self.size = max(0, int(settings.sandbox_pool_size))
        self.limits = {"memory_mb": settings.sandbox_memory_mb, "file_mb": settings.sandbox_file_mb,
                       "open_files": settings.sandbox_open_files, "cpu_s": settings.sandbox_cpu_s}
        self._ready: collections.deque[Child] = collections.deque()
        self._urgent: collections.deque[concurrent.futures.Future[Child]] = collections.deque()
        self._cond = threading.Condition()
        self._reap: collections.deque[Child] = collections.deque()
        self._reap_cond = threading.Condition()
        self._closed = False
        self._spawner = threading.Thread(target=self._spawn_loop, name="sandbox-spawner", daemon=True)
        self._reaper = threading.Thread(target=self._reap_loop, name="sandbox-reaper", daemon=True)
        self._spawner.start()
        self._reaper.start()

    # -- public ---------------------------------------------------------------------------------------------------
    def acquire(self) -> concurrent.futures.Future[Child]:
        """A child for one run: a warm one if any, else one started right away (the spawner's next job)."""
        fut: concurrent.futures.Future[Child] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                fut.set_exception(RuntimeError("the sandbox pool is closed"))
                return fut
            if self._ready:
                fut.set_result(self._ready.popleft())
            else:
                self._urgent.append(fut)
            self._cond.notify_all()
        return fut

    def discard(self, child: Child) -> None:
        """Kill a used child and clean up after it (in the reaper thread)."""
        with self._reap_cond:
            self._reap.append(child)
            self._reap_cond.notify()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            leftovers = list(self._ready)
            self._ready.clear()
            while self._urgent:
                self._urgent.popleft().set_exception(RuntimeError("the sandbox pool is closed"))
            self._cond.notify_all()
        for child in leftovers:
            self.discard(child)
        with self._reap_cond:
            self._reap_cond.notify_all()
        self._spawner.join(10)
        self._reaper.join(10)

    # -- spawning ---------------------------------------------------------------------------------------------------
    def _spawn_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._urgent and len(self._ready) >= self.size:
                    self._cond.wait()
                if self._closed:
                    return
                urgent = self._urgent.popleft() if self._urgent else None
            try:
                child = self.spawn()
            except Exception as exc:  # noqa: BLE001 - report to the waiting run, keep the loop alive
                log.exception("starting a sandbox child failed")
                if urgent is not None:
                    urgent.set_exception(exc)
                else:
                    with self._cond:
                        self._cond.wait(1.0)  # do not spin on a broken setup
                continue
            with self._cond:
                closed = self._closed
                if not closed and urgent is None:
                    self._ready.append(child)
            if closed:
                self.discard(child)
                if urgent is not None:
                    urgent.set_exception(RuntimeError("the sandbox pool is closed"))
            elif urgent is not None and not urgent.set_running_or_notify_cancel():
                self.discard(child)
            elif urgent is not None:
                urgent.set_result(child)

    def spawn(self) -> Child:
        """Start one child (it finishes its start-up on its own; the run waits for its ``ready`` frame)."""
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        sreq_r, sreq_w = os.pipe()
        srep_r, srep_w = os.pipe()
        out_r, out_w = os.pipe()
        child_ends = (to_r, from_w, sreq_w, srep_r, out_w)
        cfg = {"out": from_w, "sync_out": sreq_w, "sync_in": srep_r, "limits": self.limits, "tier": self.tier}
        tmpdir: str | None = None
        try:
            if self.tier == "bwrap":
                argv = bwrap_argv(max(2 * self.limits["file_mb"], 16) * 1024 * 1024)
                cwd = "/"
                env = {"PATH": "/usr/bin:/bin"}
            else:
                tmpdir = tempfile.mkdtemp(prefix="gofannon-sandbox-")
                exe, _ = _python()
                argv = [exe, "-I", "-S", "-B", str(CHILD_SCRIPT)]
                cwd = tmpdir
                env = {"PATH": "/usr/bin:/bin", "HOME": tmpdir, "TMPDIR": tmpdir, "LANG": "C.UTF-8"}
                cfg["workdir"] = tmpdir
                if self.tier == "landlock":
                    exe_real, prefix = _python()
                    cfg["landlock"] = {"read": [prefix, str(CHILD_SCRIPT.parent), "/usr", "/lib", "/lib64",
                                                "/etc/ld.so.cache", "/etc/localtime", "/dev/null",
                                                "/dev/urandom", "/proc/self"],
                                       "write": [tmpdir, "/dev/null"]}
            proc = subprocess.Popen(argv + [json.dumps(cfg)], stdin=to_r, stdout=out_w, stderr=out_w,
                                    pass_fds=(from_w, sreq_w, srep_r), cwd=cwd, env=env, close_fds=True,
                                    start_new_session=self.tier != "bwrap")
        except BaseException:
            for fd in (to_w, from_r, sreq_r, srep_w, out_r):
                os.close(fd)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        return Child(proc, to_w, from_r, sreq_r, srep_w, out_r, tmpdir)

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
                child.proc.kill()
            child.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - a process that will not die
            log.warning("sandbox child %s did not exit", child.proc.pid)
        child.close_fds()
        if child.tmpdir:
            shutil.rmtree(child.tmpdir, ignore_errors=True)


# -- kernel service -----------------------------------------------------------------------------------------------
def get_pool(kernel: "Kernel") -> SandboxPool:
    """The kernel's pool, created on first use (``start`` normally does it and picks the tier)."""
    if getattr(kernel, "sandbox_tier", None) is None:
        kernel.sandbox_tier = choose_tier(kernel.settings.sandbox_tier)
    return kernel.component(_COMPONENT, lambda: SandboxPool(kernel.settings, kernel.sandbox_tier))


async def start(kernel: "Kernel") -> None:
    """Pick the tier (refusing to start when the configured one is unavailable) and warm the pool."""
    import asyncio

    kernel.sandbox_tier = await asyncio.to_thread(choose_tier, kernel.settings.sandbox_tier)
    log.info("sandbox tier: %s", kernel.sandbox_tier)
    if kernel.role != "cli":
        get_pool(kernel)


async def stop(kernel: "Kernel") -> None:
    if kernel.has_component(_COMPONENT):
        import asyncio

        pool: SandboxPool = kernel.component(_COMPONENT, lambda: None)  # type: ignore[arg-type,return-value]
        await asyncio.to_thread(pool.close)


def pool_stats(kernel: "Kernel") -> dict[str, Any]:
    """Small introspection for tests and /health-like displays."""
    pool = get_pool(kernel)
    return {"tier": pool.tier, "warm": len(pool._ready), "size": pool.size}
