"""The charge journal: an answer may leave before its charge is stored, and no charge is lost.

``/v1`` answers a call as soon as the vendor has answered and its charge is *journaled*: one line appended to
this process's journal file (``<data dir>/journal/charges-*.log``, one ``write`` call, no ``fsync``). The charge
itself is then stored in the background like any other (``users._Charges``: atomic, combined per user), and a
second line marks it done. A process killed before that point leaves its file behind, unlocked; the next
kernel that starts on the same data dir replays the charges not marked done, each exactly once: a charge's
usage entry is written in the same store transaction as the user's ``spendRemaining`` (``update_and_put``),
so an entry already in the history means the charge is already stored.

Durability is the store's own class on the embedded default: a line survives the process being killed (it is
in the OS's page cache), not a power cut, like a SQLite commit with ``synchronous=NORMAL``. Without a writable
data dir, or on the in-memory store, there is no journal and charges are stored before the answer, as before.

Each file is held with an exclusive ``flock`` while its process has it open, so a live process's file is
never replayed, and two starting processes never replay the same file. A process's journal is a series of
such files (segments): one takes the appends; one grown past ``ROTATE_BYTES`` hands over to a new one and is
removed once all its charges are stored; the last is emptied whenever nothing is outstanding in it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from gofannon.jsontext import encoder

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.charges")

KEY = "charges.journal"
#: Once everything in it is done and it is larger than this, a segment starts over (truncated).
COMPACT_BYTES = 1 << 20
#: A segment larger than this hands the appends over to a new one (when charges are always in flight).
ROTATE_BYTES = 4 << 20
#: Stores whose documents outlive the process (a journal for the in-memory store would replay into nothing).
DURABLE_STORES = frozenset({"sqlite", "postgres", "redis"})
_encode = encoder(ensure_ascii=True, default=str)


class Segment:
    """One journal file, locked by this process while it is open."""

    def __init__(self, path: Path) -> None:
        # Made under a name replay does not look at, locked, then renamed into place: a starting process's
        # replay never finds a segment before its owner holds the lock.
        hidden = path.with_name("." + path.name + ".new")
        self.path = path
        self.fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, path)
        except OSError:
            os.close(self.fd)
            hidden.unlink(missing_ok=True)
            raise
        self.outstanding = 0
        self.size = 0
        self.retired = False  # a newer segment takes the appends; this one goes once all its charges are stored

    def append(self, uid: str, entry: dict[str, Any]) -> None:
        self._write({"c": uid, "e": entry})
        self.outstanding += 1

    def done(self, ids: list[str]) -> None:
        """These charges (journaled here) are stored."""
        self._write({"d": ids})
        self.outstanding -= len(ids)
        if self.outstanding <= 0:
            if self.retired:
                self.close()
            elif self.size > COMPACT_BYTES:
                os.ftruncate(self.fd, 0)
                self.size = 0

    def _write(self, record: dict[str, Any]) -> None:
        if self.fd < 0:
            raise OSError("the charge journal is closed")
        line = (_encode(record) + "\n").encode()
        os.write(self.fd, line)
        self.size += len(line)

    def close(self) -> None:
        """Nothing outstanding: the file goes; else it stays, unlocked, for the next start to replay."""
        if self.fd < 0:
            return
        if self.outstanding <= 0:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = -1


class ChargeJournal:
    """This process's journal (a kernel component): appends go to the current segment; a segment grown past
    ``ROTATE_BYTES`` hands over to a new one and is removed once every charge in it is stored, so a journal
    that never falls idle (some charge always in flight) still stays small."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.segments: set[Segment] = set()
        self.current = self._new()

    def _new(self) -> Segment:
        segment = Segment(self.folder / f"charges-{os.getpid()}-{uuid.uuid4().hex[:12]}.log")
        self.segments = {s for s in self.segments if s.fd >= 0}
        self.segments.add(segment)
        return segment

    def append(self, uid: str, entry: dict[str, Any]) -> Segment:
        """Journal one charge (its ``entry`` carries the usage entry's ``_id``) before its answer leaves; the
        segment it went to is told when it is stored (``Segment.done``)."""
        segment = self.current
        if segment.size > ROTATE_BYTES:
            fresh = self._new()  # first: if it cannot be made, the current one stays current
            segment.retired = True
            self.current = fresh
            if segment.outstanding <= 0:
                segment.close()
            segment = fresh
        segment.append(uid, entry)
        return segment

    def close(self) -> None:
        """At a clean stop (charges drained): the segments go, or stay for replay if something is left."""
        for segment in list(self.segments):
            segment.close()


def journal_of(kernel: "Kernel") -> ChargeJournal | None:
    """The running journal, or None (no durable store, no writable data dir)."""
    if not kernel.has_component(KEY):
        return None
    return kernel.component(KEY, lambda: None)  # type: ignore[arg-type,return-value]


def _folder(kernel: "Kernel") -> Path:
    return Path(kernel.settings.data_dir) / "journal"


def pending_in(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The charges of a journal's text that were never marked done, in order; a torn last line is skipped."""
    charges: dict[str, tuple[str, dict[str, Any]]] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        entry = record.get("e")
        if isinstance(record.get("c"), str) and isinstance(entry, dict) and isinstance(entry.get("_id"), str):
            charges[entry["_id"]] = (record["c"], entry)
        for done in record.get("d") or []:
            charges.pop(str(done), None)
    return list(charges.values())


#: ``store(uid, entry)``: store one journaled charge unless it is already stored; True when it stored it.
Replayer = Callable[[str, dict[str, Any]], Awaitable[bool]]


async def replay(kernel: "Kernel", store: Replayer) -> int:
    """Store the charges that processes which died left in their journals; returns how many were stored."""
    folder = _folder(kernel)
    stored = 0
    for path in sorted(folder.glob("charges-*.log")):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive (or another starting process is replaying it)
            with open(fd, "r", encoding="utf-8", errors="replace", closefd=False) as fh:
                pending = pending_in(fh.read())
            for uid, entry in pending:
                stored += bool(await store(uid, entry))
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    if stored:
        log.warning("stored %d charge(s) that a stopped process had answered but not yet written", stored)
        kernel.record("charges_replayed", f"{stored} journaled charge(s) stored", level="WARNING",
                      metadata={"count": stored})
    return stored


async def start_journal(kernel: "Kernel", store: Replayer) -> None:
    """Replay what dead processes left (with ``store``), then open this process's journal (a component)."""
    if kernel.store is None or getattr(kernel.store, "name", "") not in DURABLE_STORES:
        return
    folder = _folder(kernel)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        await replay(kernel, store)
        journal = ChargeJournal(folder)
    except OSError as exc:
        log.warning("no charge journal in %s (%s): charges are stored before each answer", folder, exc)
        return
    kernel.component(KEY, lambda: journal)
