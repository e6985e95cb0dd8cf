"""``gofannon.ids``: unique (not secret) identifiers cut from a buffer of the OS's random bytes."""

from __future__ import annotations

import os
import re
import threading

from gofannon.ids import random_hex


def test_ids_are_hex_of_the_asked_size_and_never_repeat() -> None:
    seen = {random_hex(8) for _ in range(20_000)}  # ~40 refills of the buffer
    assert len(seen) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{16}", x) for x in seen)
    assert re.fullmatch(r"[0-9a-f]{8192}", random_hex(4096)) and len(random_hex(5000)) == 10_000


def test_threads_drawing_at_once_get_distinct_ids() -> None:
    found: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(random_hex(8) for _ in range(5_000))  # 64 bits: a chance repeat among 20k is ~1e-11 (32 bits: ~5%)

    threads = [threading.Thread(target=draw, args=(f,)) for f in found]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [x for f in found for x in f]
    assert len(every) == 20_000 and len(set(every)) == 20_000


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    random_hex(1)  # the buffer is filled: a child that kept it would draw what the parent draws next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert len(child) == 32 and child != random_hex(16)
