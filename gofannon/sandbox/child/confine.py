"""Confinement the child applies to itself before any agent code exists.

In order (``confine``): its private working directory and clean environment, rlimits, Landlock, no
capabilities, the seccomp filter, then friendly Python-level guards in front of that filter. Each step only
narrows what the process may do, and none can be undone from inside: seccomp forbids raising rlimits and
creating processes, and ``PR_SET_NO_NEW_PRIVS`` is set before Landlock and seccomp. docs/sandbox.md lists what
each step refuses. Standard library only.
"""

import ctypes
import errno
import os
import resource

from .channel import AGENT_MODULE


def confine(cfg: dict) -> None:
    """Apply every restriction ``cfg`` asks for (the pool decides per tier), strongest last."""
    if cfg.get("workdir"):
        enter_workdir(cfg["workdir"])
    apply_rlimits(cfg["limits"])
    if cfg.get("landlock"):
        apply_landlock(cfg["landlock"])
    drop_capabilities()
    if cfg.get("seccomp", True):
        install_seccomp()
    guard_process_creation()


def enter_workdir(workdir: str) -> None:
    """Work in the run's private directory. The rest of the environment is already clean: the host starts the
    interpreter (or the zygote) with only PATH, HOME, TMPDIR and LANG, and ``-I -S -B``."""
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)


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


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_LIBC: list[ctypes.CDLL] = []


def libc() -> ctypes.CDLL:
    """libc with the signatures used here, loaded once (warm-up) rather than in every run's critical path."""
    if not _LIBC:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        lib.syscall.restype = ctypes.c_long
        _LIBC.append(lib)
    return _LIBC[0]


def drop_capabilities() -> None:
    """Give up every capability (a child of a root service is then a powerless uid 0: no mount, mknod,
    reboot, module loading, raw I/O, overriding file permissions...). A no-op where there are none (bwrap)."""
    header = CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (CapData * 2)()
    if libc().capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def install_seccomp() -> None:
    """Install the filter through prctl (no_new_privs first, so it works without CAP_SYS_ADMIN)."""
    lib = libc()
    machine = os.uname().machine
    if machine not in _ARCHES:
        raise OSError(f"seccomp filter not available for {machine}")
    prog = _seccomp_program(machine, os.getpid())
    filters = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    fprog = SockFprog(len(prog), filters)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if lib.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if lib.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.addressof(fprog), 0, 0) != 0:
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
    lib = libc()
    create, add_rule, restrict = 444, 445, 446
    abi = lib.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
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
    ruleset = lib.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")

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
                    if lib.syscall(add_rule, ruleset, 1, ctypes.byref(rule), 0) != 0:
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
                finally:
                    os.close(fd)
        if lib.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if lib.syscall(restrict, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


class ProcessCreationBlocked(PermissionError):
    """Raised by the Python-level guards in front of the seccomp filter, with a readable message."""

    __module__ = AGENT_MODULE


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

    _posixsubprocess.fork_exec = _blocked  # type: ignore[assignment]
    subprocess._fork_exec = _blocked  # type: ignore[attr-defined]

