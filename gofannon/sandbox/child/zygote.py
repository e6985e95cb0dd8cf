"""The zygote: one pre-imported template process that forks the children (a fork costs ~1 ms, an interpreter
start ~40).

It runs inside the tier's confinement (inside bubblewrap for ``bwrap``) but never runs agent code and never
confines itself: each forked child moves its pipes to fixed fds, closes everything of the zygote's, arms
``PR_SET_PDEATHSIG`` and ``PR_SET_DUMPABLE=0``, then becomes an ordinary child (``serve.serve_one``), which
confines itself. The host side is ``gofannon.sandbox.pool.Zygote``; they talk over a ``SOCK_SEQPACKET`` pair:
``fork`` (the child's five pipe ends ride along as ``SCM_RIGHTS``) answered by the pid, ``kill``, and
unprompted ``exit`` reports. Standard library only.
"""

import json
import os
import signal
import sys
import traceback
from typing import Any

from .channel import EXIT_HOST_GONE
from .confine import libc
from .serve import serve_one


def _zygote_child(cfg: dict, fds: list[int], zygote_pid: int) -> None:
    """In the forked child: own fds at fixed numbers, nothing of the zygote's, die with the zygote."""
    try:
        lib = libc()
        lib.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        lib.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: siblings cannot read this process's memory or environ
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
        watched: list[Any] = [ctl, wake_r]
        readable, _, _ = select.select(watched, [], [], 1.0)
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

