"""Identifiers that must be unique but are not secrets: request ids, answer ids, usage entry ids, revisions.

They are cut from a buffer of the operating system's random bytes, refilled 4 KiB at a time, instead of a system
call each (``os.urandom``, ``uuid.uuid4``): a call on the request path costs little by itself, but each one also
lets another thread (the SQLite store's, writing charges) take the interpreter lock, and the event loop then waits
to get it back. Secrets (tokens, session ids, OAuth codes) keep using ``secrets``, never this.
"""

from __future__ import annotations

import os
import threading

_REFILL = 4096


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.data = b""
        self.at = 0

    def take(self, nbytes: int) -> bytes:
        with self.lock:
            at = self.at
            if at + nbytes > len(self.data):
                self.data, at = os.urandom(max(_REFILL, nbytes)), 0
            self.at = at + nbytes
            return self.data[at:at + nbytes]


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.reset)  # a child must not hand out the bytes its parent does


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as lowercase hex (``2 * nbytes`` characters), like ``os.urandom(n).hex()``."""
    return _POOL.take(nbytes).hex()
