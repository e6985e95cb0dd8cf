"""Users, budgets and provider keys (wire contract §1.4, §2.1, §3.3, §6.4; DECISIONS.md "Budgets", "Provider keys").

Every change to a user document goes through ``kernel.store.update`` (an atomic read-modify-write), so
concurrent LLM charges and profile edits never lose an update, and two first requests of a new user
create one document. Usage entries are one document each in the ``usage`` collection, written in the same
store transaction as the charge that lowers ``spendRemaining`` (``update_and_put``); their ids start with a
per-user prefix (``usage_prefix``), so the recent entries the wire's ``usageInfo.usage`` shows
(``RECENT_USAGE``, since the last reset) are one short range read. The user document itself stays small,
which keeps a charge cheap: it holds only entries written before this layout (imported or older ones).

Provider keys are stored Fernet-encrypted under ``encryptedApiKeys`` (never sent to clients); the wire's
``apiKeys`` object shows only a masked form such as ``sk-...abcd``.
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import hashlib
import logging
import math
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from gofannon.errors import BadRequest, PaymentRequired, Unprocessable
from gofannon.ids import random_hex
from gofannon.services import charge_journal, secrets
from gofannon.timeutil import now_iso, now_ms

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.users")

COLLECTION = "users"
USAGE_COLLECTION = "usage"
RECENT_USAGE = 50
#: Below or at this remaining spend an LLM call is refused with 402 (wire contract §3.3).
MIN_SPEND = 1.0
#: Providers whose keys a user may store, in the reference's order (wire contract §6.4).
KEY_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "gemini", "perplexity", "openrouter")
_ENCRYPTED = "encryptedApiKeys"
#: When the recent usage was last cleared (a reset): history entries older than this are not "recent".
_CLEARED = "usageClearedAt"
_INTERNAL = frozenset({_ENCRYPTED, _CLEARED})


@functools.lru_cache(maxsize=4096)
def usage_prefix(uid: str) -> str:
    """The id prefix of a user's usage entries: fixed-length, so no user's prefix is another's."""
    return "u" + hashlib.sha256(uid.encode()).hexdigest()[:24] + ":"


def key_field(provider: str) -> str:
    return f"{provider}ApiKey"


def mask(key: str) -> str:
    """A hint of which key is stored without revealing it: ``sk-...abcd``."""
    if len(key) < 12:
        return "..." if len(key) < 8 else f"...{key[-2:]}"
    dash = key.find("-")
    prefix = key[: dash + 1] if 0 < dash <= 7 else key[:2]
    return f"{prefix}...{key[-4:]}"


def check_provider(provider: str) -> str:
    if provider not in KEY_PROVIDERS:
        raise BadRequest(f"Unknown provider: {provider}")
    return provider


# -- documents --------------------------------------------------------------------------------------------
def new_user(uid: str, *, display_name: str | None, email: str | None, allowance: float) -> dict[str, Any]:
    now = now_iso()
    return {
        "_id": uid,
        "createdAt": now,
        "updatedAt": now,
        "basicInfo": {"displayName": display_name, "email": email},
        "billingInfo": {"plan": None, "status": None},
        "usageInfo": {"monthlyAllowance": float(allowance), "allowanceResetDate": 0.0,
                      "spendRemaining": float(allowance), "usage": []},
        "apiKeys": {key_field(p): None for p in KEY_PROVIDERS},
    }


def wire_view(doc: dict[str, Any], recent: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``User`` of the wire (§2.1): internal fields dropped, provider keys masked, and ``usageInfo.usage``
    the document's own entries followed by ``recent`` (from the history), the last ``RECENT_USAGE`` of them."""
    out = {k: v for k, v in doc.items() if k not in _INTERNAL}
    encrypted = doc.get(_ENCRYPTED) or {}
    stored = doc.get("apiKeys") or {}
    keys: dict[str, Any] = {}
    for provider in KEY_PROVIDERS:
        name = key_field(provider)
        entry = encrypted.get(provider)
        legacy = stored.get(name)
        if isinstance(entry, dict):
            keys[name] = entry.get("masked") or "..."
        elif isinstance(legacy, str) and legacy:  # imported from the reference in plaintext
            keys[name] = mask(legacy)
        else:
            keys[name] = None
    out["apiKeys"] = keys
    usage_info = dict(out.get("usageInfo") or {})
    usage_info["usage"] = [*(usage_info.get("usage") or []), *(recent or [])][-RECENT_USAGE:]
    out["usageInfo"] = usage_info
    # the reference's key order (wire contract §1.4), then anything else the document carries
    ordered = {k: out.pop(k) for k in _WIRE_ORDER if k in out}
    ordered.update(out)
    return ordered


_WIRE_ORDER = ("_id", "_rev", "createdAt", "updatedAt", "basicInfo", "billingInfo", "usageInfo", "apiKeys")


def _add_months(dt: datetime, months: int) -> datetime:
    month0 = dt.month - 1 + months
    year, month = dt.year + month0 // 12, month0 % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def next_reset_ms(reset_ms: float, now: float) -> float:
    """The first monthly anniversary of ``reset_ms`` after ``now`` (both epoch ms)."""
    start = datetime.fromtimestamp(reset_ms / 1000.0, timezone.utc)
    current = datetime.fromtimestamp(now / 1000.0, timezone.utc)
    months = max(0, (current.year - start.year) * 12 + current.month - start.month)
    candidate = _add_months(start, months)
    while candidate.timestamp() * 1000.0 <= now:
        months += 1
        candidate = _add_months(start, months)
    return candidate.timestamp() * 1000.0


def reset_due(doc: dict[str, Any], now: float) -> bool:
    date = (doc.get("usageInfo") or {}).get("allowanceResetDate")
    return isinstance(date, (int, float)) and math.isfinite(date) and 0 < date <= now


def apply_reset(doc: dict[str, Any], now: float) -> bool:
    """Reset the allowance when its date has passed and move the date to the next month. True if reset."""
    if not reset_due(doc, now):
        return False
    info = doc["usageInfo"]
    _clear_usage(doc)
    info["spendRemaining"] = float(info.get("monthlyAllowance") or 0.0)
    try:
        info["allowanceResetDate"] = next_reset_ms(float(info["allowanceResetDate"]), now)
    except (OverflowError, OSError, ValueError):
        info["allowanceResetDate"] = 0.0  # a date outside the calendar: stop resetting rather than fail
    return True


def _clear_usage(doc: dict[str, Any]) -> None:
    doc["usageInfo"]["usage"] = []
    doc[_CLEARED] = now_iso()


async def view(kernel: "Kernel", doc: dict[str, Any]) -> dict[str, Any]:
    """The wire ``User`` of a stored document, with its recent usage read from the history."""
    uid = str(doc.get("_id"))
    if kernel.has_component(_CHARGES) and _charges(kernel).last.get(uid) is not None:
        await caught_up(kernel, uid)  # a charge taken here but not yet stored: show it, re-read
        doc = await kernel.store.get(COLLECTION, uid) or doc
    entries = await kernel.store.latest(USAGE_COLLECTION, usage_prefix(uid), RECENT_USAGE, {"userId": uid})
    since = str(doc.get(_CLEARED) or "")
    recent = [{"timestamp": e.get("timestamp"), "responseCost": e.get("responseCost"), "metadata": e.get("metadata")}
              for e in entries if e.get("userId") == uid and str(e.get("timestamp") or "") >= since]
    return wire_view(doc, recent)


def _normalise(doc: dict[str, Any]) -> dict[str, Any]:
    """Fill what older or imported documents lack, so every mutation sees the full shape."""
    info = doc.setdefault("usageInfo", {})
    info.setdefault("monthlyAllowance", 100.0)
    info.setdefault("allowanceResetDate", 0.0)
    info.setdefault("spendRemaining", info["monthlyAllowance"])
    if not isinstance(info.get("usage"), list):
        info["usage"] = []
    doc.setdefault("basicInfo", {"displayName": None, "email": None})
    doc.setdefault("billingInfo", {"plan": None, "status": None})
    if not isinstance(doc.get("apiKeys"), dict):
        doc["apiKeys"] = {key_field(p): None for p in KEY_PROVIDERS}
    return doc


async def _mutate(kernel: "Kernel", uid: str, change: Callable[[dict[str, Any]], None] | None, *,
                  display_name: str | None = None, email: str | None = None,
                  history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Atomically create-if-missing, apply a due reset, then ``change`` (None = only create/reset); ``history``
    entries are written in the same transaction.

    ``change`` runs inside the store's update (possibly on the store's thread, possibly more than once),
    so it must be a pure function of the document.
    """
    now = now_ms()
    allowance = kernel.settings.default_monthly_allowance

    def fn(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        created = doc is None
        if doc is None:
            doc = new_user(uid, display_name=display_name, email=email, allowance=allowance)
        doc = _normalise(doc)
        reset = apply_reset(doc, now)
        if change is None and not created and not reset:
            return None
        if change is not None:
            change(doc)
        doc["updatedAt"] = now_iso()
        return doc

    if history:
        stored = await kernel.store.update_and_put(COLLECTION, uid, fn, USAGE_COLLECTION, history)
    else:
        stored = await kernel.store.update(COLLECTION, uid, fn)
    assert stored is not None
    _gate(kernel).remember(uid, stored)
    return stored


# -- the cross-part contract ------------------------------------------------------------------------------
async def get_or_create_user(kernel: "Kernel", ident: "Identity | str") -> dict[str, Any]:
    """The caller's ``User`` (wire shape), created with defaults on first access; race-safe."""
    uid = ident if isinstance(ident, str) else ident.uid
    doc = await kernel.store.get(COLLECTION, uid)
    if doc is not None and not reset_due(_normalise(doc), now_ms()):
        return await view(kernel, doc)  # the common case: plain reads, no write transaction
    if isinstance(ident, str):
        return await view(kernel, await _mutate(kernel, ident, None))
    return await view(kernel, await _mutate(kernel, ident.uid, None, display_name=ident.display_name,
                                            email=ident.email))


async def require_allowance(kernel: "Kernel", uid: str, *, key_for: str | None = None) -> str | None:
    """Refuse (402) an LLM call when the remaining spend is exhausted, after any due monthly reset.

    With ``key_for``, also returns the user's own key for that provider (or None) from the same read, so
    an LLM call reads the user document once.
    """
    gate = _gate(kernel)
    seen = gate.recall(uid)
    if seen is None or reset_due(seen.doc, now_ms()):
        doc = await kernel.store.get(COLLECTION, uid)
        if doc is None or reset_due(_normalise(doc), now_ms()):
            doc = await _mutate(kernel, uid, None)  # remembers the document itself
        seen = gate.remember(uid, doc)
    remaining = seen.doc["usageInfo"].get("spendRemaining")
    if isinstance(remaining, (int, float)) and kernel.has_component(_CHARGES):
        remaining -= _charges(kernel).owed.get(uid, 0.0)  # taken here, not stored yet
    if not isinstance(remaining, (int, float)) or remaining <= MIN_SPEND:
        kernel.record("budget_refused", "spend allowance exhausted", user_id=uid)
        raise PaymentRequired("Insufficient spend allowance to complete request")
    if not key_for:
        return None
    if key_for not in seen.keys:  # decrypted once per document seen, not once per call
        seen.keys[key_for] = _stored_key(kernel, seen.doc, key_for)
    return seen.keys[key_for]


#: How long this process trusts the user document it last read or wrote for the allowance *gate*. Every write
#: made here refreshes it at once; only a change made by another API process (a charge, a new allowance) may go
#: unseen by the gate for up to this long. Charges themselves are always atomic read-modify-writes of the store.
GATE_TTL_S = 1.0


class _Seen:
    __slots__ = ("doc", "until", "keys")

    def __init__(self, doc: dict[str, Any], until: float) -> None:
        self.doc, self.until = doc, until
        self.keys: dict[str, str | None] = {}


class _Gate:
    """The user documents the gate saw last, per user (in this process)."""

    def __init__(self) -> None:
        self.seen: dict[str, _Seen] = {}

    def recall(self, uid: str) -> _Seen | None:
        seen = self.seen.get(uid)
        return seen if seen is not None and seen.until > time.monotonic() else None

    def remember(self, uid: str, doc: dict[str, Any]) -> _Seen:
        if len(self.seen) > GATE_MAX_USERS:
            now = time.monotonic()
            self.seen = {k: v for k, v in self.seen.items() if v.until > now}
        # What the gate reads, without the recent usage entries (most of a user document's size).
        info = {k: v for k, v in (doc.get("usageInfo") or {}).items() if k != "usage"}
        slim = {"usageInfo": info, _ENCRYPTED: doc.get(_ENCRYPTED), "apiKeys": doc.get("apiKeys")}
        seen = self.seen[uid] = _Seen(slim, time.monotonic() + GATE_TTL_S)
        return seen


GATE_MAX_USERS = 10_000


def _gate(kernel: "Kernel") -> _Gate:
    return kernel.component("users.gate", _Gate)


async def charge(kernel: "Kernel", uid: str, cost: float, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record one usage entry and subtract its cost (floor 0), atomically. Returns the stored user document
    (``view`` makes it the wire ``User``; ``record_usage`` does both).

    Concurrent charges of one user in this process are combined into one atomic update of the user document
    and one batch of history entries (``_Charges``): under load a busy user costs one write per round, not one
    per call, and each caller still returns only once its own charge is stored.
    """
    # Shielded: a caller that goes away does not take its charge with it.
    return await asyncio.shield(_charges(kernel).submit(kernel, uid, _entry(cost, metadata)))


def charge_later(kernel: "Kernel", uid: str, cost: float, metadata: dict[str, Any] | None = None) -> bool:
    """Journal a charge and store it in the background (``gofannon.services.charge_journal``), so the answer it
    pays for need not wait for the store. False when this process has no journal: then ``await charge(...)``.
    Reads of the user in this process (``view``, ``usage_history``) wait for it; others see it once stored."""
    journal = charge_journal.journal_of(kernel)
    if journal is None:
        return False
    entry = _entry(cost, metadata)
    entry["_id"] = _entry_id(uid, entry)
    try:
        segment = journal.append(uid, entry)
    except OSError:  # a full disk, say: this charge is stored before its answer instead
        log.warning("the charge journal cannot be written; storing the charge first", exc_info=True)
        return False
    _charges(kernel).submit(kernel, uid, entry, journal=segment)
    return True


async def caught_up(kernel: "Kernel", uid: str) -> None:
    """Wait until the charges this process has taken for ``uid`` so far are stored (read your own writes)."""
    if kernel.has_component(_CHARGES):
        await _charges(kernel).caught_up(uid)


async def record_usage(kernel: "Kernel", uid: str, cost: float, metadata: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
    """``POST /users/me/usage``: charge, then the caller's ``User`` as the wire shows it."""
    return await view(kernel, await charge(kernel, uid, cost, metadata))


def _entry_id(uid: str, entry: dict[str, Any]) -> str:
    return f"{usage_prefix(uid)}{entry['timestamp']}:{random_hex(4)}"


def _entry(cost: float, metadata: dict[str, Any] | None) -> dict[str, Any]:
    cost = float(cost)
    if not math.isfinite(cost) or cost < 0:
        raise Unprocessable("responseCost must be a finite number >= 0")
    return {"timestamp": now_iso(), "responseCost": cost, "metadata": metadata}


_CHARGES = "users.charges"


def _charges(kernel: "Kernel") -> "_Charges":
    return kernel.component(_CHARGES, _Charges)


#: How long journaled charges (``charge_later``: their answers have already left) wait for company before they are
#: stored, so that a user's back-to-back calls share one write instead of one each. Anything that awaits a charge,
#: or reads the user's usage in this process (``caught_up``), or the kernel closing, ends the wait at once.
GATHER_S = 0.02
#: A user whose charges keep coming (a script calling back to back) has them stored at most this often: each round
#: waits until this long after the previous one was written. Another API process sees them within this long.
BURST_S = 0.1


def _release(waker: "asyncio.Future[None]") -> None:
    if not waker.done():
        waker.set_result(None)


class _Round:
    """Charges of one user that go to the store in one write, and the future their takers wait on (the stored
    user document)."""

    __slots__ = ("entries", "journals", "done", "awaited", "opened", "urgent")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.opened = loop.time()  # when its first charge was taken
        self.entries: list[dict[str, Any]] = []
        self.journals: list[Any] = []  # the journal segment of each entry (None: not journaled)
        self.done: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.awaited = False  # a ``charge()`` waits for it: no gathering, and a failure is its taker's to hear
        self.urgent = False  # a reader of the user's usage (or the kernel closing) wants it stored now


class _Charges:
    """Per user: the round of charges taking new ones, and one flush task writing rounds one after the other."""

    def __init__(self) -> None:
        self.next: dict[str, _Round] = {}
        self.flushing: dict[str, asyncio.Task[None]] = {}
        self.last: dict[str, asyncio.Future[dict[str, Any]]] = {}  # each user's latest round
        self.gathering: dict[str, asyncio.Future[None]] = {}  # flushes waiting for company (GATHER_S)
        self.owed: dict[str, float] = {}  # per user: what charges taken here and not yet stored add up to
        self.written: dict[str, float] = {}  # per user: when (loop time) their last round was written
        self.closing = False  # the kernel is closing: nothing waits for company any more

    def submit(self, kernel: "Kernel", uid: str, entry: dict[str, Any],
               journal: Any = None) -> "asyncio.Future[dict[str, Any]]":
        """Queue a charge; the future is the user document as stored with it. With ``journal`` (a journaled charge
        nobody awaits) it is marked done there once stored, and a failure is logged (the journal keeps it)."""
        rnd = self.next.get(uid)
        if rnd is None:
            loop = asyncio.get_running_loop()
            rnd = self.next[uid] = _Round(loop)
            self.last[uid] = rnd.done
            rnd.done.add_done_callback(lambda f, uid=uid: self.last.pop(uid) if self.last.get(uid) is f else None)
            if uid not in self.flushing:  # else the running flush takes this round after the one it is writing
                # Not kernel.spawn: closing the kernel drains these instead of cancelling them.
                self.flushing[uid] = loop.create_task(self._flush(kernel, uid))
        rnd.entries.append(entry)
        rnd.journals.append(journal)
        self.owed[uid] = self.owed.get(uid, 0.0) + entry["responseCost"]
        if journal is None:  # somebody awaits this one: no gathering
            rnd.awaited = True
            self.wake(uid)
        return rnd.done

    def wake(self, uid: str) -> None:
        """End the gathering wait of ``uid``'s flush, if it is waiting: its charges are written now."""
        rnd = self.next.get(uid)
        if rnd is not None:
            rnd.urgent = True  # also when it is not gathering yet (a round before it is being written)
        waker = self.gathering.pop(uid, None)
        if waker is not None:
            _release(waker)

    async def caught_up(self, uid: str) -> None:
        last = self.last.get(uid)
        if last is not None:
            self.wake(uid)
            await asyncio.wait([last])  # its failure is its taker's (or the log's) to report

    async def drain(self) -> None:
        """Write every queued charge (the kernel calls this before it closes the store)."""
        self.closing = True
        while self.flushing:
            for uid in list(self.gathering):
                self.wake(uid)
            await asyncio.gather(*list(self.flushing.values()), return_exceptions=True)

    def _paid(self, uid: str, entries: list[dict[str, Any]]) -> None:
        """These charges are no longer owed here: stored (the gate sees them in the document), or failed."""
        left = self.owed.get(uid, 0.0) - sum(e["responseCost"] for e in entries)
        if left <= 1e-12 and uid not in self.next:
            self.owed.pop(uid, None)
        else:
            self.owed[uid] = max(0.0, left)

    def _written(self, uid: str) -> None:
        now = asyncio.get_running_loop().time()
        if len(self.written) >= 10_000:  # only the last BURST_S matters: forget older ones
            self.written = {u: t for u, t in self.written.items() if t > now - BURST_S}
        self.written[uid] = now

    async def _gather(self, uid: str) -> None:
        """Wait for more of ``uid``'s charges, unless one of those queued is awaited: until ``GATHER_S`` after the
        round's first charge, or ``BURST_S`` after the user's previous round was written if that is later."""
        rnd = self.next.get(uid)
        if GATHER_S <= 0 or rnd is None or rnd.awaited or rnd.urgent or self.closing:
            return
        loop = asyncio.get_running_loop()
        wait = max(rnd.opened + GATHER_S, self.written.get(uid, -BURST_S) + BURST_S) - loop.time()
        if wait <= 0:
            return
        waker = self.gathering[uid] = loop.create_future()
        timer = loop.call_later(wait, _release, waker)
        try:
            await waker
        finally:
            timer.cancel()
            if self.gathering.get(uid) is waker:
                del self.gathering[uid]

    async def _flush(self, kernel: "Kernel", uid: str) -> None:
        try:
            while True:  # charges taken while a round is written start the next round, which gathers in turn
                await self._gather(uid)
                rnd = self.next.pop(uid, None)
                if rnd is None:
                    break
                try:
                    doc = await store_charges(kernel, uid, rnd.entries)
                except BaseException as exc:  # noqa: BLE001 - every taker hears of the failure
                    self._written(uid)
                    self._paid(uid, rnd.entries)
                    _failed(rnd, exc if isinstance(exc, Exception) else RuntimeError("charge interrupted"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self._written(uid)
                self._paid(uid, rnd.entries)
                _journal_done(rnd)
                rnd.done.set_result(doc)
        finally:
            # Unregistered in the task's own last step, so a charge taken after it finds no flush and starts one.
            if self.flushing.get(uid) is asyncio.current_task():
                del self.flushing[uid]


async def start(kernel: "Kernel") -> None:
    """Store what killed processes journaled but never wrote, then journal this process's charges."""

    async def replay_one(uid: str, entry: dict[str, Any]) -> bool:
        if await kernel.store.get(USAGE_COLLECTION, entry["_id"]) is not None:
            return False  # stored before its process died: the entry and the spend went in one transaction
        await store_charges(kernel, uid, [entry])
        return True

    await charge_journal.start_journal(kernel, replay_one)


def _journal_done(rnd: _Round) -> None:
    """Mark the journaled charges of a stored round done in the journal segments they were written to."""
    by_segment: dict[Any, list[str]] = {}
    for entry, segment in zip(rnd.entries, rnd.journals):
        if segment is not None:
            by_segment.setdefault(segment, []).append(entry["_id"])
    for segment, ids in by_segment.items():
        try:
            segment.done(ids)
        except OSError:  # stored all the same; a replay would find the entries and skip them
            log.warning("could not mark charges done in the journal", exc_info=True)


def _failed(rnd: _Round, exc: Exception) -> None:
    """A round could not be stored: its takers hear it; journaled charges stay in the journal (stored at the next
    start), which the log says."""
    rnd.done.set_exception(exc)
    if not rnd.awaited:
        rnd.done.exception()  # nobody awaits it: retrieved here, reported below
    if any(segment is not None for segment in rnd.journals):
        log.error("a journaled charge could not be stored now; it stays in the journal and is stored at the "
                  "next start", exc_info=exc)


async def store_charges(kernel: "Kernel", uid: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Write charges: ``spendRemaining`` lowered and their usage entries added, in one store transaction (an
    entry's ``_id``, when it has one, is kept: the journal's replay checks it)."""
    def change(doc: dict[str, Any]) -> None:
        info = doc["usageInfo"]
        remaining = float(info.get("spendRemaining") or 0.0)
        for entry in entries:
            remaining = max(0.0, remaining - entry["responseCost"])
        info["spendRemaining"] = remaining

    history = [{"userId": uid, **e, "_id": e.get("_id") or _entry_id(uid, e)} for e in entries]
    return await _mutate(kernel, uid, change, history=history)


async def user_api_key(kernel: "Kernel", uid: str, provider: str) -> str | None:
    """The user's own key for ``provider`` in clear, or None."""
    doc = await kernel.store.get(COLLECTION, uid)
    return _stored_key(kernel, doc, provider) if doc is not None else None


def _stored_key(kernel: "Kernel", doc: dict[str, Any], provider: str) -> str | None:
    entry = (doc.get(_ENCRYPTED) or {}).get(provider)
    if isinstance(entry, dict) and isinstance(entry.get("ciphertext"), str):
        return secrets.decrypt(kernel, entry["ciphertext"])
    legacy = (doc.get("apiKeys") or {}).get(key_field(provider))
    return legacy if isinstance(legacy, str) and legacy else None


# -- budgets ----------------------------------------------------------------------------------------------
def _set_allowance(info: dict[str, Any], allowance: float) -> None:
    info["monthlyAllowance"] = allowance
    if float(info.get("spendRemaining") or 0.0) > allowance:
        info["spendRemaining"] = allowance


async def set_monthly_allowance(kernel: "Kernel", ident: "Identity", value: float) -> dict[str, Any]:
    return await _change_own(kernel, ident, lambda doc: _set_allowance(doc["usageInfo"], float(value)))


async def set_allowance_reset_date(kernel: "Kernel", ident: "Identity", value: float) -> dict[str, Any]:
    return await _change_own(kernel, ident, lambda doc: doc["usageInfo"].__setitem__("allowanceResetDate", float(value)))


async def set_spend_remaining(kernel: "Kernel", ident: "Identity", value: float) -> dict[str, Any]:
    return await _change_own(kernel, ident, lambda doc: doc["usageInfo"].__setitem__("spendRemaining", float(value)))


async def reset_allowance(kernel: "Kernel", ident: "Identity") -> dict[str, Any]:
    def change(doc: dict[str, Any]) -> None:
        info = doc["usageInfo"]
        info["spendRemaining"] = float(info.get("monthlyAllowance") or 0.0)
        _clear_usage(doc)

    return await _change_own(kernel, ident, change)


async def _change_own(kernel: "Kernel", ident: "Identity", change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    return await view(kernel, await _mutate(kernel, ident.uid, change, display_name=ident.display_name,
                                            email=ident.email))


async def admin_update(kernel: "Kernel", uid: str, *, monthly_allowance: float | None,
                       allowance_reset_date: float | None, spend_remaining: float | None) -> dict[str, Any]:
    """The admin edit (§1.5): allowance (with clamp), then reset date, then spendRemaining (unclamped)."""

    def change(doc: dict[str, Any]) -> None:
        info = doc["usageInfo"]
        if monthly_allowance is not None:
            _set_allowance(info, float(monthly_allowance))
        if allowance_reset_date is not None:
            info["allowanceResetDate"] = float(allowance_reset_date)
        if spend_remaining is not None:
            info["spendRemaining"] = float(spend_remaining)

    return await view(kernel, await _mutate(kernel, uid, change))


async def list_users(kernel: "Kernel") -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(view(kernel, doc) for doc in await kernel.store.list(COLLECTION))))


async def usage_history(kernel: "Kernel", uid: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The most recent ``limit`` usage entries of the full history, oldest first.

    Read as two ranges of ids, newest first, whatever the size of the history: this version's entries
    (``usage_prefix``) and those an earlier version wrote or the reference import brought (``<uid>:<time>:...``);
    both sort by time within their range."""
    if limit <= 0:
        return []
    await caught_up(kernel, uid)
    where = {"userId": uid}
    ranges = await asyncio.gather(kernel.store.latest(USAGE_COLLECTION, usage_prefix(uid), limit, where),
                                  kernel.store.latest(USAGE_COLLECTION, f"{uid}:", limit, where))
    docs = [d for found in ranges for d in found if d.get("userId") == uid]
    if len(docs) < limit and any(len(found) >= limit for found in ranges):
        # Another user's ids share the older prefix (a uid that extends this one past a ':'): read them all.
        docs = await kernel.store.find(USAGE_COLLECTION, where)
    docs.sort(key=lambda d: str(d.get("timestamp") or ""))
    return [{"timestamp": d.get("timestamp"), "responseCost": d.get("responseCost"), "metadata": d.get("metadata")}
            for d in docs[-limit:]]


# -- provider keys ----------------------------------------------------------------------------------------
async def set_api_key(kernel: "Kernel", ident: "Identity", provider: str, api_key: str) -> dict[str, Any]:
    check_provider(provider)
    entry = {"ciphertext": secrets.encrypt(kernel, api_key), "masked": mask(api_key), "updatedAt": now_iso()}

    def change(doc: dict[str, Any]) -> None:
        doc[_ENCRYPTED] = {**(doc.get(_ENCRYPTED) or {}), provider: entry}
        doc["apiKeys"][key_field(provider)] = None  # never keep a plaintext copy

    return await _change_own(kernel, ident, change)


async def delete_api_key(kernel: "Kernel", ident: "Identity", provider: str) -> dict[str, Any]:
    check_provider(provider)

    def change(doc: dict[str, Any]) -> None:
        encrypted = dict(doc.get(_ENCRYPTED) or {})
        encrypted.pop(provider, None)
        doc[_ENCRYPTED] = encrypted
        doc["apiKeys"][key_field(provider)] = None

    return await _change_own(kernel, ident, change)


def env_key_available(kernel: "Kernel", provider: str) -> bool:
    """Whether the server has a key for ``provider`` in its environment (the catalog names the variable)."""
    from gofannon.llm.catalog import active

    names = {f"{provider.upper()}_API_KEY"}
    configured = (active().providers.get(provider) or {}).get("api_key_env_var")
    if isinstance(configured, str) and configured:
        names.add(configured)
    return any(kernel.settings.env(name) for name in names)


async def effective_key_source(kernel: "Kernel", ident: "Identity", provider: str) -> dict[str, Any]:
    """``{provider, has_key, source}`` where source is ``user``, ``env`` or None (§6.4, any provider string)."""
    if await user_api_key(kernel, ident.uid, provider):
        return {"provider": provider, "has_key": True, "source": "user"}
    if env_key_available(kernel, provider):
        return {"provider": provider, "has_key": True, "source": "env"}
    return {"provider": provider, "has_key": False, "source": None}
