"""The DocumentStore protocol: JSON documents in named collections, with revisions.

Every stored document carries ``_id`` and ``_rev``. ``put`` takes an expected revision for optimistic
concurrency: ``rev=ANY`` overwrites, ``rev=None`` creates only, ``rev="<rev>"`` replaces only that
revision; a mismatch raises ``RevisionConflict``. ``update`` is the atomic read-modify-write every
counter (billing, access counts) goes through; ``update_and_put`` adds new documents to the same write (a
charge and its history entry). ``list`` and ``find`` return documents ordered by ``_id``, as CouchDB's
``_all_docs`` does; ``latest`` reads the last few ids under a prefix (a user's recent history). Backends are plugins (``register_storage_backends``); the
conformance suite in ``gofannon.store.conformance`` pins this behaviour for all of them.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

from gofannon.errors import DocumentNotFound, RevisionConflict
from gofannon.ids import random_hex


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: ``put(..., rev=ANY)``: write whatever revision is stored.
ANY: Any = _Any()

Doc = dict[str, Any]
Updater = Callable[[Doc | None], Doc | None]


def next_rev(current: str | None) -> str:
    n = int(current.split("-", 1)[0]) + 1 if current else 1
    return f"{n}-{random_hex(8)}"


def matches(doc: Mapping[str, Any], where: Mapping[str, Any] | None) -> bool:
    if not where:
        return True
    return all(doc.get(k, _MISSING) == v for k, v in where.items())


_MISSING = object()

_ATOMS = (str, int, float, bool, type(None))


def copy_doc(value: Any) -> Any:
    """A private copy of a JSON-shaped value (dicts, lists, strings, numbers, booleans, None), ~3x faster than
    ``copy.deepcopy`` (which tracks shared references a JSON tree does not have); anything else is deep-copied."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _ATOMS else copy_doc(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMS else copy_doc(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


@runtime_checkable
class DocumentStore(Protocol):
    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def get(self, collection: str, doc_id: str) -> Doc | None: ...
    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc | None]: ...
    async def put(self, collection: str, doc_id: str, doc: Mapping[str, Any], *, rev: Any = ANY) -> str: ...
    async def put_many(self, collection: str, docs: Iterable[Mapping[str, Any]]) -> list[str]: ...
    async def delete(self, collection: str, doc_id: str, *, rev: Any = ANY) -> bool: ...
    async def delete_many(self, collection: str, ids: Iterable[str]) -> int: ...
    async def list(self, collection: str, *, limit: int | None = None) -> list[Doc]: ...
    async def find(self, collection: str, where: Mapping[str, Any], *, limit: int | None = None) -> list[Doc]: ...
    async def count(self, collection: str, where: Mapping[str, Any] | None = None) -> int: ...
    async def update(self, collection: str, doc_id: str, fn: Updater) -> Doc | None: ...
    async def update_and_put(self, collection: str, doc_id: str, fn: Updater, put_collection: str,
                             docs: Iterable[Mapping[str, Any]]) -> Doc | None: ...
    async def latest(self, collection: str, prefix: str, limit: int,
                     where: Mapping[str, Any] | None = None) -> list[Doc]: ...
    async def collections(self) -> list[str]: ...
    def stamp(self, collection: str, doc_id: str) -> int | None: ...


class StoreHelpers:
    """Behaviour shared by backends, written once on top of the primitive methods."""

    name = "base"
    max_update_attempts = 100

    async def open(self) -> None:  # pragma: no cover - trivial default
        return None

    async def close(self) -> None:  # pragma: no cover - trivial default
        return None

    def stamp(self, collection: str, doc_id: str) -> int | None:
        """A cheap number that changes whenever the document changes, in any process using this store, or None
        when the backend cannot tell without reading it (then callers read it). A caller may reuse a document
        it read while its stamp holds, provided it read the stamp *before* the document."""
        return None

    async def require(self, collection: str, doc_id: str) -> Doc:
        doc = await self.get(collection, doc_id)  # type: ignore[attr-defined]
        if doc is None:
            raise DocumentNotFound(collection, doc_id)
        return doc

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc | None]:
        return {i: await self.get(collection, i) for i in ids}  # type: ignore[attr-defined]

    async def put_many(self, collection: str, docs: Iterable[Mapping[str, Any]]) -> list[str]:
        return [await self.put(collection, d["_id"], d) for d in docs]  # type: ignore[attr-defined]

    async def delete_many(self, collection: str, ids: Iterable[str]) -> int:
        n = 0
        for i in ids:
            n += bool(await self.delete(collection, i))  # type: ignore[attr-defined]
        return n

    async def count(self, collection: str, where: Mapping[str, Any] | None = None) -> int:
        if where:
            return len(await self.find(collection, where))  # type: ignore[attr-defined]
        return len(await self.list(collection))  # type: ignore[attr-defined]

    async def update(self, collection: str, doc_id: str, fn: Updater) -> Doc | None:
        """Compare-and-set loop: re-reads and re-applies ``fn`` until no one else wrote in between.

        ``fn`` gets a private copy of the stored document (None when absent) and returns the new
        document, or None to leave the store unchanged. Returns the document as stored.
        """
        for _ in range(self.max_update_attempts):
            current = await self.get(collection, doc_id)  # type: ignore[attr-defined]
            new = fn(copy_doc(current))
            if new is None:
                return current
            try:
                rev = await self.put(  # type: ignore[attr-defined]
                    collection, doc_id, new, rev=None if current is None else current["_rev"]
                )
            except RevisionConflict:
                continue
            stored = dict(new)
            stored["_id"], stored["_rev"] = doc_id, rev
            return stored
        raise RevisionConflict(collection, doc_id)

    async def update_and_put(self, collection: str, doc_id: str, fn: Updater, put_collection: str,
                             docs: Iterable[Mapping[str, Any]]) -> Doc | None:
        """``update``, then ``put_many(put_collection, docs)``. Backends with transactions do both in one
        (SQLite, memory); this default writes them one after the other."""
        items = list(docs)
        stored = await self.update(collection, doc_id, fn)
        if items:
            await self.put_many(put_collection, items)
        return stored

    async def latest(self, collection: str, prefix: str, limit: int,
                     where: Mapping[str, Any] | None = None) -> list[Doc]:
        """The last ``limit`` documents (by ``_id``) whose id starts with ``prefix``, oldest first. ``where``
        narrows what this default scans (backends that range-scan ids may ignore it; ids must imply it)."""
        if limit <= 0:
            return []
        docs = await self.find(collection, where or {})  # type: ignore[attr-defined]
        return [d for d in docs if str(d.get("_id", "")).startswith(prefix)][-limit:]


def prepare(doc: Mapping[str, Any], doc_id: str, rev: str) -> Doc:
    """The document as it is stored: a deep copy with ``_id`` and the new ``_rev``."""
    stored = copy_doc(dict(doc))
    stored["_id"] = doc_id
    stored["_rev"] = rev
    return stored


def check_rev(collection: str, doc_id: str, current_rev: str | None, expected: Any) -> None:
    if expected is ANY:
        return
    if expected != current_rev:
        raise RevisionConflict(collection, doc_id)


__all__ = [
    "ANY",
    "Doc",
    "DocumentStore",
    "StoreHelpers",
    "Updater",
    "check_rev",
    "copy_doc",
    "matches",
    "next_rev",
    "prepare",
]
