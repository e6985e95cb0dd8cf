"""The sandbox child: runs ONE agent's code, then exits. Started by the host (``gofannon.sandbox.pool``).

Standard library only, and run as a script (``python -I -S child.py``): it must start fast and must not
see the project, its settings or its secrets. Run as a zygote (``{"zygote": true}``) it imports everything
once and forks the children on the host's request (see ``zygote``); otherwise it is the child itself.
Lifecycle of a child:

1. start-up (while warm in the pool): import what a run needs, apply rlimits (and Landlock), install the
   seccomp filter that forbids process creation, rehearse a run, then send ``{"t": "ready"}``;
2. read one request frame from stdin, install the agent API (``call_llm``, ``data_store``, ...), exec the code
   in one namespace and ``await run(input_dict=..., tools=...)``;
3. send ``{"t": "done", ...}`` and ``os._exit``.

Channel (see docs/sandbox.md): frames are a 4-byte big-endian length followed by UTF-8 JSON.
fd 0 (host → child): the request, then replies ``{"t": "reply", "id", "ok", "value" | "etype", "error"}``.
``out`` (child → host): ``ready``, ``op`` ``{"id", "op", "args"}``, ``event`` and ``done`` frames.
``sync_out``/``sync_in``: blocking request/reply pair for the synchronous ``data_store`` API.
"""

import asyncio
import base64
import builtins
import errno
import io
import json
import logging
import os
import resource
import signal
import struct
import sys
import threading
import time
import traceback
import types
from datetime import datetime, timezone

_HEADER = struct.Struct(">I")
MAX_EVENTS = 2000
MAX_MESSAGE = 4096
#: printed bytes after which the run is stopped (the trace keeps only the first MAX_EVENTS lines anyway)
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
MAX_RESULT_BYTES = 32 * 1024 * 1024

# --------------------------------------------------------------------------------------------------------------
# framing


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("host closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> dict:
    (size,) = _HEADER.unpack(_read_exact(fd, 4))
    return json.loads(_read_exact(fd, size))


class Writer:
    """Thread-safe blocking frame writer (agent code may print from threads)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, obj: dict) -> None:
        data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
        data = _HEADER.pack(len(data)) + data
        with self.lock:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]


# --------------------------------------------------------------------------------------------------------------
# confinement applied by the child itself


def apply_rlimits(limits: dict) -> None:
    """Limits the kernel enforces on this process; set before any agent code exists."""
    mb = 1024 * 1024
    pairs = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_AS, int(limits["memory_mb"]) * mb),
        (resource.RLIMIT_FSIZE, int(limits["file_mb"]) * mb),
        (resource.RLIMIT_NOFILE, int(limits["open_files"])),
    ]
    for res, value in pairs:
        resource.setrlimit(res, (value, value))
    cpu = int(limits["cpu_s"])
    # soft limit raises SIGXCPU (reported as the cpu limit), the hard one kills a process that ignores it
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))


# seccomp: classic BPF assembled by hand (linux/filter.h, linux/seccomp.h)
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JSET_K = 0x45
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL = 0x80000000  # SECCOMP_RET_KILL_PROCESS
_CLONE_THREAD = 0x00010000
_ARCHES = {
    # machine: (AUDIT_ARCH, syscalls)
    "x86_64": (0xC000003E, {"fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone": 56, "clone3": 435,
                            "ptrace": 101, "kill": 62, "tkill": 200, "tgkill": 234, "setrlimit": 160,
                            "prlimit64": 302, "process_vm_readv": 310, "process_vm_writev": 311,
                            "pidfd_open": 434, "pidfd_send_signal": 424, "unshare": 272, "setns": 308,
                            "mount": 165, "bpf": 321, "userfaultfd": 323, "keyctl": 250, "socket": 41,
                            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                            "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "perf_event_open": 298}),
    "aarch64": (0xC00000B7, {"execve": 221, "execveat": 281, "clone": 220, "clone3": 435, "ptrace": 117,
                             "kill": 129, "tkill": 130, "tgkill": 131, "setrlimit": 164, "prlimit64": 261,
                             "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_open": 434,
                             "pidfd_send_signal": 424, "unshare": 97, "setns": 268, "mount": 40, "bpf": 280,
                             "userfaultfd": 282, "keyctl": 219, "socket": 198, "io_uring_setup": 425,
                             "io_uring_enter": 426, "io_uring_register": 427, "rt_sigqueueinfo": 138,
                             "rt_tgsigqueueinfo": 240, "perf_event_open": 241}),
}


def _seccomp_program(machine: str, my_pid: int) -> list[tuple[int, int, int, int]]:
    """The filter: no new processes, no programs, no signals or ptrace to others, no raising of rlimits,
    no sockets (socketpair stays: asyncio's self-pipe uses it), no io_uring (it could bypass the filter).

    clone without CLONE_THREAD and fork/vfork/execve* answer EPERM; clone3 answers ENOSYS so libc falls
    back to clone, whose flags a classic filter can inspect. kill/tgkill are allowed only for our own pid.
    """
    arch, nr = _ARCHES[machine]
    eperm = _RET_ERRNO | errno.EPERM
    prog: list[tuple[int, int, int, int]] = []
    label_fixups: list[tuple[int, str, str]] = []  # (index, true-label, false-label)

    def stmt(code: int, k: int) -> None:
        prog.append((code, 0, 0, k))

    def jump(code: int, k: int, jt: str, jf: str) -> None:
        label_fixups.append((len(prog), jt, jf))
        prog.append((code, 0, 0, k))

    stmt(_BPF_LD_W_ABS, 4)  # seccomp_data.arch
    jump(_BPF_JEQ_K, arch, "next", "kill")
    stmt(_BPF_LD_W_ABS, 0)  # seccomp_data.nr
    if machine == "x86_64":
        jump(_BPF_JGE_K, 0x40000000, "eperm", "next")  # x32 ABI
    simple_eperm = ["fork", "vfork", "execve", "execveat", "ptrace", "tkill", "setrlimit", "process_vm_readv",
                    "process_vm_writev", "pidfd_open", "pidfd_send_signal", "unshare", "setns", "mount", "bpf",
                    "userfaultfd", "keyctl", "socket", "io_uring_setup", "io_uring_enter", "io_uring_register",
                    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "perf_event_open"]
    for name in simple_eperm:
        if name in nr:
            jump(_BPF_JEQ_K, nr[name], "eperm", "next")
    jump(_BPF_JEQ_K, nr["clone3"], "enosys", "next")
    jump(_BPF_JEQ_K, nr["clone"], "clone", "next")
    jump(_BPF_JEQ_K, nr["kill"], "own_pid", "next")
    jump(_BPF_JEQ_K, nr["tgkill"], "own_pid", "next")
    jump(_BPF_JEQ_K, nr["prlimit64"], "prlimit", "next")
    labels: dict[str, int] = {}
    labels["allow"] = len(prog)
    stmt(_BPF_RET_K, _RET_ALLOW)
    # each block ends in its own "allow": classic BPF jumps only forward
    labels["clone"] = len(prog)
    stmt(_BPF_LD_W_ABS, 16)  # args[0] low word: clone flags
    jump(_BPF_JSET_K, _CLONE_THREAD, "next", "eperm")
    stmt(_BPF_RET_K, _RET_ALLOW)
    labels["own_pid"] = len(prog)
    stmt(_BPF_LD_W_ABS, 16)  # args[0] low word: pid / tgid
    jump(_BPF_JEQ_K, my_pid, "next", "eperm")
    stmt(_BPF_RET_K, _RET_ALLOW)
    labels["prlimit"] = len(prog)
    stmt(_BPF_LD_W_ABS, 32)  # args[2] (new limit pointer) low word
    jump(_BPF_JEQ_K, 0, "next", "eperm")
    stmt(_BPF_LD_W_ABS, 36)
    jump(_BPF_JEQ_K, 0, "next", "eperm")
    stmt(_BPF_RET_K, _RET_ALLOW)
    labels["eperm"] = len(prog)
    stmt(_BPF_RET_K, eperm)
    labels["enosys"] = len(prog)
    stmt(_BPF_RET_K, _RET_ERRNO | errno.ENOSYS)
    labels["kill"] = len(prog)
    stmt(_BPF_RET_K, _RET_KILL)
    for index, jt, jf in label_fixups:
        code, _, _, k = prog[index]
        offsets = [0 if label == "next" else labels[label] - index - 1 for label in (jt, jf)]
        prog[index] = (code, offsets[0], offsets[1], k)
    assert all(0 <= ins[1] < 256 and 0 <= ins[2] < 256 for ins in prog), "seccomp jump out of range"
    return prog


_KIT: dict = {}


def _ctypes_kit() -> dict:
    """libc and the seccomp structures, built once (warm-up) rather than in every run's critical path."""
    if not _KIT:
        import ctypes

        class SockFilter(ctypes.Structure):
            _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                        ("k", ctypes.c_uint)]

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.syscall.restype = ctypes.c_long
        _KIT.update(ctypes=ctypes, libc=libc, SockFilter=SockFilter, SockFprog=SockFprog)
    return _KIT


def drop_capabilities() -> None:
    """Give up every capability (a child of a root service is then a powerless uid 0: no mount, mknod,
    reboot, module loading, raw I/O, overriding file permissions...). A no-op where there are none (bwrap)."""
    kit = _ctypes_kit()
    ctypes, libc = kit["ctypes"], kit["libc"]

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (Data * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def install_seccomp() -> None:
    """Install the filter through prctl (no_new_privs first, so it works without CAP_SYS_ADMIN)."""
    kit = _ctypes_kit()
    ctypes, libc, SockFilter, SockFprog = kit["ctypes"], kit["libc"], kit["SockFilter"], kit["SockFprog"]
    machine = os.uname().machine
    if machine not in _ARCHES:
        raise OSError(f"seccomp filter not available for {machine}")
    prog = _seccomp_program(machine, os.getpid())
    filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), filters)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


# Landlock (linux/landlock.h): the child restricts its own file-system view (tier "landlock")
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 14, 1 << 15
_LL_FILE_RIGHTS = _LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE | _LL_IOCTL_DEV


def apply_landlock(rules: dict) -> None:
    """Allow reading ``rules["read"]`` and writing ``rules["write"]``; everything else is out of reach.

    Also, where the kernel's Landlock ABI offers it: no TCP bind/connect (v4) and no signals or abstract unix
    sockets beyond this process's domain (v6).
    """
    kit = _ctypes_kit()
    ctypes, libc = kit["ctypes"], kit["libc"]
    create, add_rule, restrict = 444, 445, 446
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        raise OSError(ctypes.get_errno(), "Landlock is not available")
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= 1 << 13  # REFER
    if abi >= 3:
        handled |= _LL_TRUNCATE
    if abi >= 5:
        handled |= _LL_IOCTL_DEV
    fields = [handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0]  # fs, net (bind|connect tcp), scoped
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = (ctypes.c_uint64 * 3)(*fields)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    read = _LL_EXECUTE | _LL_READ_FILE | _LL_READ_DIR
    try:
        for rights, paths in ((read, rules.get("read") or []), (handled, rules.get("write") or [])):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue  # absent on this system
                try:
                    allowed = rights & handled
                    if not os.path.isdir(path):
                        allowed &= _LL_FILE_RIGHTS
                    rule = PathBeneath(allowed, fd)
                    if libc.syscall(add_rule, ruleset, 1, ctypes.byref(rule), 0) != 0:
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
                finally:
                    os.close(fd)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(restrict, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


class ProcessCreationBlocked(PermissionError):
    """Raised by the Python-level guards in front of the seccomp filter, with a readable message."""


def _blocked(*_a: object, **_k: object) -> None:
    raise ProcessCreationBlocked(errno.EPERM, "Creating processes is not allowed in the sandbox")


def guard_process_creation() -> None:
    """Friendly errors for the common ways to start processes; the seccomp filter is the real barrier."""
    for name in ("fork", "forkpty", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp",
                 "execlpe", "posix_spawn", "posix_spawnp", "system", "spawnv", "spawnve", "spawnvp",
                 "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "popen"):
        if hasattr(os, name):
            setattr(os, name, _blocked)
    import _posixsubprocess  # subprocess and multiprocessing start programs through it
    import subprocess

    _posixsubprocess.fork_exec = _blocked
    subprocess._fork_exec = _blocked


# --------------------------------------------------------------------------------------------------------------
# the agent API inside the child


class HTTPException(Exception):
    """How a platform error (``GofannonError`` on the host) reaches agent code: str is ``"<status>: <detail>"``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        head, _, detail = message.partition(": ")
        self.status_code = int(head) if head.isdigit() else 500
        self.detail = detail if head.isdigit() else message


class ToolError(Exception):
    """An MCP tool answered ``isError``."""


def _remote_exception(etype: str, message: str) -> BaseException:
    if etype == "HTTPException":
        return HTTPException(message)
    cls = getattr(builtins, etype, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return type(etype, (Exception,), {"__module__": "gofannon"})(message)


class Runtime:
    """State of the one run: channel, pending ops, trace emission."""

    def __init__(self, out: Writer, sync_out: int, sync_in: int, req: dict) -> None:
        self.out = out
        self.sync_out = Writer(sync_out)
        self.sync_in = sync_in
        self.sync_lock = threading.Lock()
        self.req = req
        self.capture = bool(req.get("capture_trace", True))
        self.user_trace = bool(req.get("user_trace", True))  # stdout/log events (GOFANNON_DISABLE_USER_TRACE)
        self.agent_name = req.get("agent_name") or "sandbox_agent"
        self.inner_depth = int(req.get("depth") or 0) + 1
        self.events_sent = 0
        self.output_bytes = 0
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- trace events ---------------------------------------------------------------------------------------
    def event(self, type_: str, source: str, **fields: object) -> None:
        if not self.capture:
            return
        self.events_sent += 1
        if self.events_sent > MAX_EVENTS:
            return  # the host adds the trace_truncated marker
        ev = {"type": type_, "ts": datetime.now(timezone.utc).isoformat(), "agent_name": self.agent_name,
              "depth": self.inner_depth, **fields, "source": source}
        self.out.send({"t": "event", "event": ev})

    def output(self, text: str) -> None:
        self.output_bytes += len(text)
        if self.output_bytes > MAX_OUTPUT_BYTES:
            self.out.send({"t": "done", "result": None, "limit": "output",
                           "error": f"Sandbox limit exceeded: output (the run printed more than "
                                    f"{MAX_OUTPUT_BYTES // (1024 * 1024)} MB)"})
            os._exit(EXIT_OUTPUT)
        if self.user_trace:
            self.event("stdout", "stdout", message=text[:MAX_MESSAGE])

    # -- async ops (multiplexed by id over the main channel) ---------------------------------------------------
    async def call(self, op: str, args: dict) -> object:
        self.next_id += 1
        rid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        try:
            self.out.send({"t": "op", "id": rid, "op": op, "args": args})
            return await fut
        finally:
            self.pending.pop(rid, None)

    def on_reply(self, msg: dict) -> None:
        fut = self.pending.get(msg.get("id"))
        if fut is None or fut.done():
            return
        if msg.get("ok"):
            fut.set_result(msg.get("value"))
        else:
            fut.set_exception(_remote_exception(msg.get("etype") or "RuntimeError", msg.get("error") or ""))

    # -- synchronous ops (data_store) ------------------------------------------------------------------------
    def call_sync(self, op: str, args: dict) -> object:
        with self.sync_lock:
            self.sync_out.send({"t": "op", "op": op, "args": args})
            msg = read_frame(self.sync_in)
        if msg.get("ok"):
            return msg.get("value")
        raise _remote_exception(msg.get("etype") or "RuntimeError", msg.get("error") or "")


class _ReplyProtocol(asyncio.Protocol):
    """Reads reply frames from the host on the child's event loop."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (size,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) < 4 + size:
                return
            msg = json.loads(bytes(self.buf[4:4 + size]))
            del self.buf[:4 + size]
            self.rt.on_reply(msg)

    def connection_lost(self, exc: BaseException | None) -> None:
        os._exit(EXIT_HOST_GONE)  # the host went away: nothing left to report to


class _StreamToTrace(io.TextIOBase):
    """sys.stdout / sys.stderr: each line becomes a ``stdout`` trace event."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.buf = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self.lock:
            self.buf += s
            while "\n" in self.buf or len(self.buf) > MAX_MESSAGE:
                line, sep, rest = self.buf.partition("\n")
                if not sep:
                    line, rest = self.buf[:MAX_MESSAGE], self.buf[MAX_MESSAGE:]
                self.buf = rest
                self.rt.output(line)
        return len(s)

    def flush(self) -> None:
        with self.lock:
            if self.buf:
                line, self.buf = self.buf, ""
                self.rt.output(line)


class _LogToTrace(logging.Handler):
    def __init__(self, rt: Runtime) -> None:
        super().__init__(logging.INFO)
        self.rt = rt

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            msg = str(record.msg)
        self.rt.output_bytes += len(msg)
        if self.rt.output_bytes > MAX_OUTPUT_BYTES:
            self.rt.output("")  # ends the run with the output limit
        if self.rt.user_trace:
            self.rt.event("log", "log", level=record.levelname, logger=record.name, message=msg[:MAX_MESSAGE])


def build_api(rt: Runtime) -> dict:
    """The names injected into the agent's namespace (wire contract §4.2), all backed by the host channel."""

    async def call_llm(provider, model, messages, parameters=None, tools=None, timeout=None, **kw):
        for private in ("user_service", "user_id", "user_basic_info"):
            kw.pop(private, None)
        started = time.perf_counter()
        error = None
        usage: dict = {}
        try:
            reply = await rt.call("llm.call", {"provider": provider, "model": model, "messages": messages,
                                               "parameters": parameters or {}, "tools": tools,
                                               "timeout": timeout, **kw})
            usage = reply if isinstance(reply, dict) else {}
            return reply.get("content"), reply.get("thoughts")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            rt.event("llm_call", "llm", provider=provider, model=model,
                     input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"),
                     duration_ms=round((time.perf_counter() - started) * 1000, 3),
                     cost_usd=usage.get("cost_usd"), error=error)

    async def get_context_window(provider, model):
        return await rt.call("llm.context_window", {"provider": provider, "model": model})

    def count_tokens(text, provider="anthropic", model="claude-opus-4-6"):
        return int(len(str(text or "")) / 2.5)

    def count_message_tokens(messages, provider="anthropic", model="claude-opus-4-6"):
        total = 0
        for message in messages or []:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
            total += count_tokens(content or "") + 4
        return total

    # -- MCP ---------------------------------------------------------------------------------------------------
    def _obj(value):
        if isinstance(value, dict):
            return types.SimpleNamespace(**{k: _obj(v) for k, v in value.items() if isinstance(k, str)})
        if isinstance(value, list):
            return [_obj(v) for v in value]
        return value

    class CallToolResult:
        def __init__(self, reply: dict) -> None:
            self.content = _obj(reply.get("content") or [])
            self.structured_content = reply.get("structuredContent")
            sc = self.structured_content
            self.data = sc["result"] if isinstance(sc, dict) and set(sc) == {"result"} else sc
            self.is_error = bool(reply.get("isError"))

        def __repr__(self) -> str:
            return f"CallToolResult(content={self.content!r}, structured_content={self.structured_content!r}, " \
                   f"is_error={self.is_error})"

    class RemoteMCPClient:
        def __init__(self, remote_url, auth_token=None):
            self.remote_url = remote_url
            self.auth_token = auth_token
            self._tools = None

        async def list_tools(self):
            tools = await rt.call("mcp.list_tools", {"url": self.remote_url, "auth_token": self.auth_token})
            self._tools = {t.get("name"): types.SimpleNamespace(
                name=t.get("name"), description=t.get("description"),
                inputSchema=t.get("inputSchema") or t.get("input_schema") or {}) for t in tools or []}
            return list(self._tools.values())

        def get_tool_doc(self, tool_name):
            tool = (self._tools or {}).get(tool_name)
            if tool is None:
                return f"Tool '{tool_name}' not found. Call list_tools() first."
            props = (tool.inputSchema or {}).get("properties") or {}
            required = set((tool.inputSchema or {}).get("required") or [])
            lines = [f"### {tool.name}", "", tool.description or "", "", "**Parameters:**"]
            for pname, spec in props.items():
                req = " (required)" if pname in required else ""
                lines.append(f"- `{pname}` ({spec.get('type', 'any')}){req}: {spec.get('description', '')}")
            return "\n".join(lines)

        async def call(self, tool_name, **params):
            if self._tools is None:
                await self.list_tools()
            if tool_name not in self._tools:
                raise ValueError(f"Tool '{tool_name}' not found on the server.")
            reply = await rt.call("mcp.call_tool", {"url": self.remote_url, "name": tool_name,
                                                    "arguments": params, "auth_token": self.auth_token})
            result = CallToolResult(reply or {})
            if result.is_error:
                texts = [getattr(c, "text", "") for c in result.content if getattr(c, "text", None)]
                raise ToolError("\n".join(texts) or f"Tool '{tool_name}' failed")
            return result

    # -- httpx-like client ---------------------------------------------------------------------------------------
    httpx = _make_httpx(rt)

    class GofannonClient:
        async def call(self, agent_name, input_dict=None):
            return await rt.call("agents.call", {"agent_name": agent_name, "input_dict": input_dict or {}})

    class DataStoreProxy:
        def __init__(self, namespace="default"):
            self.namespace = namespace

        def _op(self, op, **args):
            return rt.call_sync(f"data_store.{op}", {"namespace": self.namespace, **args})

        def use_namespace(self, namespace):
            return DataStoreProxy(namespace)

        def get(self, key, default=None):
            return self._op("get", key=key, default=default)

        def set(self, key, value, metadata=None):
            return self._op("set", key=key, value=value, metadata=metadata)

        def delete(self, key):
            return bool(self._op("delete", key=key))

        def delete_many(self, keys):
            return int(self._op("delete_many", keys=list(keys)) or 0)

        def list_keys(self, prefix=None):
            return list(self._op("list_keys", prefix=prefix) or [])

        def list_namespaces(self):
            return list(self._op("list_namespaces") or [])

        def get_all(self):
            return dict(self._op("get_all") or {})

        def get_many(self, keys):
            return dict(self._op("get_many", keys=list(keys)) or {})

        def set_many(self, items, metadata=None):
            return int(self._op("set_many", items=dict(items), metadata=metadata) or 0)

        def clear(self):
            return int(self._op("clear") or 0)

        def __repr__(self) -> str:
            return f"<data_store namespace={self.namespace!r}>"

    import re

    return {
        "call_llm": call_llm, "get_context_window": get_context_window, "count_tokens": count_tokens,
        "count_message_tokens": count_message_tokens, "RemoteMCPClient": RemoteMCPClient,
        "http_client": httpx.AsyncClient(follow_redirects=True), "gofannon_client": GofannonClient(),
        "data_store": DataStoreProxy(), "asyncio": asyncio, "json": json, "re": re, "httpx": httpx,
        "ToolError": ToolError, "HTTPException": HTTPException,
    }


def _make_httpx(rt: Runtime) -> types.ModuleType:
    """A module named ``httpx`` whose AsyncClient sends every request through the host (its SSRF guard)."""
    mod = types.ModuleType("httpx")
    from urllib.parse import urlencode, urljoin

    class HTTPError(Exception):
        pass

    class RequestError(HTTPError):
        pass

    class ConnectError(RequestError):
        pass

    class TimeoutException(RequestError):
        pass

    class HTTPStatusError(HTTPError):
        def __init__(self, message, *, request=None, response=None):
            super().__init__(message)
            self.request, self.response = request, response

    class Headers(dict):
        """Case-insensitive lookups over the response headers."""

        def __init__(self, items=()):
            super().__init__()
            for k, v in (items.items() if isinstance(items, dict) else items):
                super().__setitem__(str(k).lower(), v)

        def __getitem__(self, key):
            return super().__getitem__(str(key).lower())

        def get(self, key, default=None):
            return super().get(str(key).lower(), default)

        def __contains__(self, key):
            return super().__contains__(str(key).lower())

    class Timeout:
        def __init__(self, timeout=None, **kw):
            self.timeout = timeout if not isinstance(timeout, Timeout) else timeout.timeout

    class Response:
        def __init__(self, status_code=200, headers=None, content=b"", url="", text=None, json=None):
            self.status_code = int(status_code)
            self.headers = Headers(headers or {})
            if json is not None:
                content = _json_dumps(json).encode()
            elif text is not None:
                content = text.encode()
            self.content = content or b""
            self.url = url
            self.request = None

        @property
        def text(self):
            ctype = self.headers.get("content-type", "")
            charset = "utf-8"
            if "charset=" in ctype:
                charset = ctype.split("charset=", 1)[1].split(";")[0].strip() or "utf-8"
            try:
                return self.content.decode(charset, errors="replace")
            except LookupError:
                return self.content.decode("utf-8", errors="replace")

        def json(self, **kw):
            return json.loads(self.content or b"null", **kw)

        @property
        def is_success(self):
            return 200 <= self.status_code < 300

        @property
        def is_error(self):
            return self.status_code >= 400

        @property
        def reason_phrase(self):
            import http

            try:
                return http.HTTPStatus(self.status_code).phrase
            except ValueError:
                return ""

        def raise_for_status(self):
            if self.status_code < 400:
                return self
            kind = "Client error" if self.status_code < 500 else "Server error"
            raise HTTPStatusError(f"{kind} '{self.status_code} {self.reason_phrase}' for url '{self.url}'",
                                  response=self)

        async def aread(self):
            return self.content

        def __repr__(self):
            return f"<Response [{self.status_code} {self.reason_phrase}]>"

    def _json_dumps(value):
        return json.dumps(value)

    class AsyncClient:
        def __init__(self, *, base_url="", headers=None, params=None, timeout=None, follow_redirects=False,
                     **_ignored):
            self.base_url = str(base_url or "")
            self.headers = dict(headers or {})
            self.params = dict(params or {})
            self.timeout = timeout.timeout if isinstance(timeout, Timeout) else timeout
            self.follow_redirects = follow_redirects
            self.is_closed = False

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            await self.aclose()

        async def aclose(self):
            self.is_closed = True

        async def request(self, method, url, *, params=None, headers=None, content=None, data=None, json=None,
                          files=None, timeout=None, follow_redirects=None, **_ignored):
            if files is not None:
                raise NotImplementedError("file uploads are not supported by the sandbox http client")
            url = str(url)
            if self.base_url and not url.startswith(("http://", "https://")):
                url = urljoin(self.base_url.rstrip("/") + "/", url.lstrip("/"))
            hdrs = {**self.headers, **dict(headers or {})}
            args: dict = {"method": str(method).upper(), "url": url, "headers": hdrs,
                          "params": {**self.params, **dict(params or {})},
                          "timeout": (timeout.timeout if isinstance(timeout, Timeout) else timeout) or self.timeout,
                          "follow_redirects": self.follow_redirects if follow_redirects is None else follow_redirects}
            if json is not None:
                args["json"] = json
            else:
                if data is not None and content is None:
                    if isinstance(data, dict):
                        content = urlencode(data, doseq=True)
                        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
                    else:
                        content = data
                if content is not None:
                    raw = content.encode() if isinstance(content, str) else bytes(content)
                    args["content"] = base64.b64encode(raw).decode()
            try:
                reply = await rt.call("http.request", args)
            except HTTPException as exc:
                if exc.status_code == 504:
                    raise TimeoutException(str(exc)) from None
                raise ConnectError(str(exc)) from None
            except TimeoutError as exc:
                raise TimeoutException(str(exc)) from None
            resp = Response(reply.get("status_code", 0), reply.get("headers") or {},
                            base64.b64decode(reply.get("content") or ""), reply.get("url") or url)
            return resp

        async def get(self, url, **kw):
            return await self.request("GET", url, **kw)

        async def head(self, url, **kw):
            return await self.request("HEAD", url, **kw)

        async def options(self, url, **kw):
            return await self.request("OPTIONS", url, **kw)

        async def delete(self, url, **kw):
            return await self.request("DELETE", url, **kw)

        async def post(self, url, **kw):
            return await self.request("POST", url, **kw)

        async def put(self, url, **kw):
            return await self.request("PUT", url, **kw)

        async def patch(self, url, **kw):
            return await self.request("PATCH", url, **kw)

    for obj in (HTTPError, RequestError, ConnectError, TimeoutException, HTTPStatusError, Headers, Timeout, Response,
                AsyncClient):
        setattr(mod, obj.__name__, obj)
    mod.ReadTimeout = mod.ConnectTimeout = TimeoutException
    return mod


def install_modules(api: dict) -> None:
    """Make the reference's import lines resolve to this run's (user-bound) objects."""
    af = types.ModuleType("agent_factory")
    af_rmc = types.ModuleType("agent_factory.remote_mcp_client")
    af_rmc.RemoteMCPClient = api["RemoteMCPClient"]
    af.remote_mcp_client = af_rmc
    services = types.ModuleType("services")
    llm = types.ModuleType("services.llm_service")
    llm.call_llm = api["call_llm"]
    services.llm_service = llm
    sys.modules.update({"agent_factory": af, "agent_factory.remote_mcp_client": af_rmc, "services": services,
                        "services.llm_service": llm, "httpx": api["httpx"]})


# --------------------------------------------------------------------------------------------------------------
# running


def _limit_of(exc: BaseException) -> str | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return "memory"
        if isinstance(exc, ProcessCreationBlocked):
            return "processes"
        if isinstance(exc, OSError):
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                return "open files"
            if exc.errno in (errno.EFBIG, errno.ENOSPC):
                return "file size"
        exc = exc.__cause__ or exc.__context__
    return None


def _limit_message(limit: str, limits: dict, exc: BaseException) -> str:
    what = {
        "memory": f"memory (the run needed more than {limits['memory_mb']} MB)",
        "open files": f"open files (more than {limits['open_files']} open files)",
        "file size": f"file size (a file grew past {limits['file_mb']} MB or the sandbox disk is full)",
        "processes": "processes (agent code may not create processes)",
    }[limit]
    return f"Sandbox limit exceeded: {what} [{type(exc).__name__}]"


EXIT_OUTPUT, EXIT_HOST_GONE, EXIT_CPU = 3, 4, 5


def _send_cpu_limit(out: Writer, limits: dict) -> None:
    """SIGXCPU handler. If a frame is half-written the exit code alone tells the host."""
    if out.lock.acquire(blocking=False):
        out.lock.release()
        out.send({"t": "done", "result": None, "limit": "cpu",
                  "error": f"Sandbox limit exceeded: cpu (more than {limits['cpu_s']} s of CPU time)"})
    os._exit(EXIT_CPU)


async def _main(rt: Runtime, req: dict, limits: dict) -> dict:
    loop = asyncio.get_running_loop()
    rt.loop = loop
    await loop.connect_read_pipe(lambda: _ReplyProtocol(rt), os.fdopen(0, "rb", buffering=0))
    api = build_api(rt)
    install_modules(api)
    ns: dict = {"__name__": "__agent__", "__builtins__": builtins, **api}
    try:
        code = compile(req.get("code") or "", "<agent>", "exec")
        exec(code, ns)
        run = ns.get("run")
        if run is None or not asyncio.iscoroutinefunction(run):
            raise ValueError("Code did not define an 'async def run(input_dict, tools)' function.")
        result = await run(input_dict=req.get("input_dict"), tools=req.get("tools") or {})
    except BaseException as exc:
        return _failure(rt, exc, limits)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return {"t": "done", "result": result, "error": None, "limit": None}


def _failure(rt: Runtime, exc: BaseException, limits: dict) -> dict:
    limit = _limit_of(exc)
    if limit is not None:
        error = _limit_message(limit, limits, exc)
    else:
        error = f"{type(exc).__name__}: {exc}"
    # only the agent's own frames: the sandbox's internals are no business of the trace reader
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<agent>"]
    tb = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    return {"t": "done", "result": None, "error": error, "limit": limit,
            "exception_type": type(exc).__name__, "message": str(exc), "traceback": tb[-MAX_MESSAGE:]}


def warm_up() -> None:
    """Import everything a run needs (done once: in the pool's waiting child, or in the zygote)."""
    import re  # noqa: F401 - warm-up import
    import urllib.parse  # noqa: F401 - warm-up import

    async def noop() -> None:
        return None

    asyncio.run(noop())  # first-call costs of the event loop machinery are paid here, not by the run
    _ctypes_kit()


def _rehearse(cfg: dict) -> None:
    """A dry run of a run's machinery before announcing readiness.

    A forked child shares the zygote's pages until it writes them (reference counts count as writes); touching
    what a run touches now moves those copy-on-write faults out of the run's critical path.
    """
    rt = Runtime(Writer(-1), -1, -1, {"capture_trace": False})
    api = build_api(rt)

    async def rehearsal() -> None:
        ns = {"__name__": "__agent__", "__builtins__": builtins, **api}
        exec(compile("async def run(input_dict, tools):\n    return {'k': [1, 'x']}\n", "<agent>", "exec"), ns)
        json.dumps(await ns["run"](input_dict={}, tools={}))

    asyncio.run(rehearsal())
    json.loads(json.dumps({"code": "x", "input_dict": {"a": [1, 2.5, None, True]}}))


def serve_one(cfg: dict) -> None:
    """Confine this process, announce readiness, run the one request, report, exit."""
    out = Writer(int(cfg["out"]))
    limits = cfg["limits"]
    signal.signal(signal.SIGXCPU, lambda *_: _send_cpu_limit(out, limits))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises EFBIG, reported as "file size"
    if cfg.get("workdir"):
        os.chdir(cfg["workdir"])
        os.environ.update(HOME=cfg["workdir"], TMPDIR=cfg["workdir"])
    apply_rlimits(limits)
    if cfg.get("landlock"):
        apply_landlock(cfg["landlock"])
    drop_capabilities()
    if cfg.get("seccomp", True):
        install_seccomp()
    guard_process_creation()
    if cfg.get("rehearse", True):
        _rehearse(cfg)
    out.send({"t": "ready", "pid": os.getpid()})
    try:
        req = read_frame(0)
    except EOFError:
        os._exit(0)
    env = req.get("env_vars") or {}
    os.environ.update({str(k): str(v) for k, v in env.items()})
    rt = Runtime(out, int(cfg["sync_out"]), int(cfg["sync_in"]), req)
    sys.stdout = _StreamToTrace(rt)
    sys.stderr = _StreamToTrace(rt)
    root = logging.getLogger()
    root.handlers[:] = [_LogToTrace(rt)]
    root.setLevel(logging.INFO)
    try:
        done = asyncio.run(_main(rt, req, limits))
    except BaseException as exc:
        done = _failure(rt, exc, limits)
    try:
        frame = json.dumps(done, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        done = _failure(rt, TypeError(f"The agent's result is not JSON-serialisable: {exc}"), limits)
        frame = json.dumps(done).encode()
    except MemoryError:
        done = {"t": "done", "result": None, "limit": "memory",
                "error": f"Sandbox limit exceeded: memory (the run needed more than {limits['memory_mb']} MB)"}
        frame = json.dumps(done).encode()
    if len(frame) > MAX_RESULT_BYTES:
        frame = json.dumps({"t": "done", "result": None, "limit": "output",
                            "error": f"Sandbox limit exceeded: output (the result is larger than "
                                     f"{MAX_RESULT_BYTES // (1024 * 1024)} MB)"}).encode()
    with out.lock:
        data = memoryview(_HEADER.pack(len(frame)) + frame)
        while data:
            data = data[os.write(out.fd, data):]
    os._exit(0)


# --------------------------------------------------------------------------------------------------------------
# zygote: one pre-imported template that forks the children (a fork costs ~1 ms, an interpreter start ~40)


def _zygote_child(cfg: dict, fds: list[int], zygote_pid: int) -> None:
    """In the forked child: own fds at fixed numbers, nothing of the zygote's, die with the zygote."""
    try:
        libc = _ctypes_kit()["libc"]
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: siblings cannot read this process's memory or environ
        if os.getppid() != zygote_pid:
            os._exit(EXIT_HOST_GONE)  # the zygote died before the death signal was armed
        high = [os.dup(fd) for fd in fds]  # move out of the way before placing them
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in high]
        to_r, from_w, sreq_w, srep_r, out_w = high
        for src, dst in ((to_r, 0), (out_w, 1), (out_w, 2), (from_w, 3), (sreq_w, 4), (srep_r, 5)):
            os.dup2(src, dst)
        os.closerange(6, 65536)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        if cfg.get("workdir_create"):
            os.mkdir(cfg["workdir"], 0o700)
        cfg.update(out=3, sync_out=4, sync_in=5)
        serve_one(cfg)
    except BaseException:  # noqa: BLE001 - the host shows this output when the child fails to start
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(1)


def zygote(cfg: dict) -> None:
    """Serve ``fork`` and ``kill`` commands from the host over a SOCK_SEQPACKET socket; report exits."""
    import select
    import shutil
    import socket

    ctl = socket.socket(fileno=int(cfg["control"]))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, str | None] = {}

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            workdir = children.pop(pid, None)
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            ctl.send(json.dumps({"exit": pid, "status": os.waitstatus_to_exitcode(status)}).encode())

    import gc

    gc.collect()
    gc.freeze()  # the template's objects stay out of the children's collections (and their pages unshared)
    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    while True:
        readable, _, _ = select.select([ctl, wake_r], [], [], 1.0)
        if wake_r in readable:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
        reap()
        if ctl not in readable:
            continue
        msg, fds, _flags, _addr = socket.recv_fds(ctl, 65536, 8)
        if not msg:
            for pid in list(children):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os._exit(0)
        cmd = json.loads(msg)
        if cmd["cmd"] == "fork":
            child_cfg = {**cfg["child"], **cmd.get("cfg", {})}
            zygote_pid = os.getpid()
            pid = os.fork()
            if pid == 0:
                ctl.close()
                _zygote_child(child_cfg, fds, zygote_pid)
            for fd in fds:
                os.close(fd)
            children[pid] = child_cfg.get("workdir") if child_cfg.get("workdir_create") else None
            ctl.send(json.dumps({"id": cmd["id"], "pid": pid}).encode())
        elif cmd["cmd"] == "kill":
            if int(cmd["pid"]) in children:
                try:
                    os.kill(int(cmd["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def main() -> None:
    cfg = json.loads(sys.argv[1])
    warm_up()
    if cfg.get("zygote"):
        zygote(cfg)
    else:
        serve_one(cfg)


if __name__ == "__main__":
    main()
