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


class _Pool(threading.local):
    """Each thread's own buffer (no lock, and no two threads ever hand out the same bytes)."""

    data = b""
    at = 0


_POOL = _Pool()


def _forked() -> None:
    _POOL.data, _POOL.at = b"", 0  # a child must not hand out the bytes its parent does


os.register_at_fork(after_in_child=_forked)


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as lowercase hex (``2 * nbytes`` characters), like ``os.urandom(n).hex()``."""
    pool = _POOL
    at = pool.at
    end = at + nbytes
    data = pool.data
    if end > len(data):
        data = pool.data = os.urandom(max(_REFILL, nbytes))
        at, end = 0, nbytes
    pool.at = end
    return data[at:end].hex()
