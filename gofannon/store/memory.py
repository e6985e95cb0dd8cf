"""In-memory DocumentStore: one process, nothing persisted. For tests and throwaway runs."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from gofannon.store import ANY, Doc, StoreHelpers, check_rev, copy_doc, matches, next_rev, prepare


class MemoryStore(StoreHelpers):
    name = "memory"

    def __init__(self, settings: Any = None) -> None:
        self._data: dict[str, dict[str, Doc]] = {}

    async def get(self, collection: str, doc_id: str) -> Doc | None:
        doc = self._data.get(collection, {}).get(doc_id)
        return copy_doc(doc) if doc is not None else None

    async def put(self, collection: str, doc_id: str, doc: Mapping[str, Any], *, rev: Any = ANY) -> str:
        coll = self._data.setdefault(collection, {})
        current = coll.get(doc_id)
        check_rev(collection, doc_id, current["_rev"] if current else None, rev)
        new_rev = next_rev(current["_rev"] if current else None)
        coll[doc_id] = prepare(doc, doc_id, new_rev)
        return new_rev

    async def delete(self, collection: str, doc_id: str, *, rev: Any = ANY) -> bool:
        coll = self._data.get(collection, {})
        current = coll.get(doc_id)
        if current is None:
            if rev is not ANY and rev is not None:
                check_rev(collection, doc_id, None, rev)
            return False
        check_rev(collection, doc_id, current["_rev"], rev)
        del coll[doc_id]
        return True

    async def list(self, collection: str, *, limit: int | None = None) -> list[Doc]:
        return await self.find(collection, {}, limit=limit)

    async def find(self, collection: str, where: Mapping[str, Any], *, limit: int | None = None) -> list[Doc]:
        coll = self._data.get(collection, {})
        out = [copy_doc(coll[k]) for k in sorted(coll) if matches(coll[k], where)]
        return out[:limit] if limit is not None else out

    async def update_and_put(self, collection: str, doc_id: str, fn: Any, put_collection: str,
                             docs: Iterable[Mapping[str, Any]]) -> Doc | None:
        # No await between the read and the writes: atomic on the event loop.
        current = self._data.get(collection, {}).get(doc_id)
        new = fn(copy_doc(current) if current is not None else None)
        items = list(docs)
        coll = self._data.setdefault(put_collection, {})
        for d in items:
            old = coll.get(d["_id"])
            coll[d["_id"]] = prepare(d, d["_id"], next_rev(old["_rev"] if old else None))
        if new is None:
            return copy_doc(current) if current is not None else None
        rev = next_rev(current["_rev"] if current else None)
        self._data.setdefault(collection, {})[doc_id] = prepare(new, doc_id, rev)
        return copy_doc(self._data[collection][doc_id])

    async def collections(self) -> list[str]:
        return sorted(c for c, docs in self._data.items() if docs)

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc | None]:
        return {i: await self.get(collection, i) for i in ids}
