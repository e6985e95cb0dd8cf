"""Redis DocumentStore: shared by every API and worker process that points at the same Redis.

Layout under the key prefix ``P`` (``GOFANNON_REDIS_PREFIX``):

- ``P doc:<collection>:<id>`` — a hash ``{rev, body}``; ``body`` is the document's JSON without
  ``_id``/``_rev`` (they are added on read, so a document is never stored with a stale revision).
- ``P idx:<collection>`` — a sorted set of ids, all scored 0, so ``ZRANGE`` returns them in byte order:
  the same ``_id`` order the SQLite and memory stores give.
- ``P collections`` — the set of collections that hold documents.

Compare-and-set runs as a Lua script, so the revision check and the write are one atomic step in
Redis whatever the number of processes. ``update`` is a compare-and-set loop; within one process a
per-document lock queues concurrent updates, so retries only happen between processes.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import random
import weakref
from typing import Any, Iterable, Mapping

from gofannon.errors import RevisionConflict
from gofannon.ids import random_hex
from gofannon.jsontext import escape_surrogates
from gofannon.store import ANY, Doc, StoreHelpers, Updater, copy_doc, matches

# KEYS: doc, index, collections. ARGV: mode (any|create|rev), expected rev, id, collection, body, nonce.
# Returns the new revision, or false on a revision mismatch.
_PUT_ONE = """
local current = redis.call('HGET', KEYS[1], 'rev')
local mode = ARGV[1]
if mode == 'create' and current then return false end
if mode == 'rev' and current ~= ARGV[2] then return false end
local n = 1
if current then n = tonumber(string.match(current, '^(%d+)-')) + 1 end
local rev = n .. '-' .. ARGV[6]
redis.call('HSET', KEYS[1], 'rev', rev, 'body', ARGV[5])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
"""
_PUT = _PUT_ONE + "return rev\n"

# ``_PUT`` of one document, then (only if it was written) new documents of another collection, atomically.
# KEYS: as ``_PUT``, the other collection's index, then one doc key per new document.
# ARGV: as ``_PUT`` (6), the other collection's name, then id, body, nonce per new document.
_PUT_WITH = _PUT_ONE + """
local extra = (#ARGV - 7) / 3
for i = 0, extra - 1 do
  local key = KEYS[5 + i]
  local old = redis.call('HGET', key, 'rev')
  local m = 1
  if old then m = tonumber(string.match(old, '^(%d+)-')) + 1 end
  redis.call('HSET', key, 'rev', m .. '-' .. ARGV[10 + 3 * i], 'body', ARGV[9 + 3 * i])
  redis.call('ZADD', KEYS[4], 0, ARGV[8 + 3 * i])
end
if extra > 0 then redis.call('SADD', KEYS[3], ARGV[7]) end
return rev
"""

# KEYS: doc, index, collections. ARGV: mode (any|rev), expected rev, id, collection.
# Returns 1 deleted, 0 absent, -1 revision mismatch.
_DELETE = """
local current = redis.call('HGET', KEYS[1], 'rev')
if not current then
  if ARGV[1] == 'rev' then return -1 end
  return 0
end
if ARGV[1] == 'rev' and current ~= ARGV[2] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[4]) end
return 1
"""


def _dump(doc: Mapping[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k not in ("_id", "_rev")}
    # half a surrogate pair (from a JSON escape) is kept as its escape: redis-py encodes strictly
    return escape_surrogates(json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False))


def _load(doc_id: str, rev: str, body: str) -> Doc:
    doc: Doc = json.loads(body)
    doc["_id"], doc["_rev"] = doc_id, rev
    return doc


#: Connections one process keeps to Redis for documents; more concurrent operations wait their turn.
MAX_CONNECTIONS = 64


class RedisStore(StoreHelpers):
    name = "redis"
    max_update_attempts = 1000

    def __init__(self, url: str, prefix: str = "gofannon:") -> None:
        self.url = url
        self.prefix = prefix
        self._client: Any = None
        self._put_script: Any = None
        self._delete_script: Any = None
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    @classmethod
    def from_settings(cls, settings: Any) -> "RedisStore":
        if not settings.redis_url:
            raise RuntimeError("GOFANNON_STORAGE=redis needs REDIS_URL (for example redis://127.0.0.1:6379/0)")
        return cls(settings.redis_url, settings.redis_prefix)

    # -- plumbing -------------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._client is not None:
            return
        import redis.asyncio as aioredis

        # A blocking pool: a burst of concurrent operations waits for a free connection instead of failing
        # with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, decode_responses=True, max_connections=MAX_CONNECTIONS, timeout=30)
        self._client = aioredis.Redis.from_pool(pool)  # the client owns and closes the pool
        await self._client.ping()
        self._put_script = self._client.register_script(_PUT)
        self._put_with_script = self._client.register_script(_PUT_WITH)
        self._delete_script = self._client.register_script(_DELETE)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisStore is not open")
        return self._client

    def _doc_key(self, collection: str, doc_id: str) -> str:
        if ":" in collection:
            raise ValueError(f"collection names may not contain ':' ({collection!r})")
        return f"{self.prefix}doc:{collection}:{doc_id}"

    def _index_key(self, collection: str) -> str:
        return f"{self.prefix}idx:{collection}"

    @property
    def _collections_key(self) -> str:
        return f"{self.prefix}collections"

    def _put_args(self, collection: str, doc_id: str, doc: Mapping[str, Any], rev: Any) -> tuple[list[str], list[str]]:
        if rev is ANY:
            mode, expected = "any", ""
        elif rev is None:
            mode, expected = "create", ""
        else:
            mode, expected = "rev", str(rev)
        keys = [self._doc_key(collection, doc_id), self._index_key(collection), self._collections_key]
        return keys, [mode, expected, doc_id, collection, _dump(doc), random_hex(8)]

    # -- primitives -----------------------------------------------------------------------------------
    async def get(self, collection: str, doc_id: str) -> Doc | None:
        rev, body = await self._redis.hmget(self._doc_key(collection, doc_id), "rev", "body")
        return _load(doc_id, rev, body) if rev is not None and body is not None else None

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc | None]:
        wanted = list(ids)
        found = await self._fetch(collection, wanted)
        return {i: found.get(i) for i in wanted}

    async def _fetch(self, collection: str, ids: list[str]) -> dict[str, Doc]:
        if not ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for doc_id in ids:
            pipe.hmget(self._doc_key(collection, doc_id), "rev", "body")
        rows = await pipe.execute()
        return {i: _load(i, rev, body) for i, (rev, body) in zip(ids, rows, strict=True) if rev is not None and body is not None}

    async def put(self, collection: str, doc_id: str, doc: Mapping[str, Any], *, rev: Any = ANY) -> str:
        keys, args = self._put_args(collection, doc_id, doc, rev)
        new_rev = await self._put_script(keys=keys, args=args)
        if not new_rev:
            raise RevisionConflict(collection, doc_id)
        return str(new_rev)

    async def put_many(self, collection: str, docs: Iterable[Mapping[str, Any]]) -> list[str]:
        items = list(docs)
        if not items:
            return []
        pipe = self._redis.pipeline(transaction=True)
        for d in items:
            keys, args = self._put_args(collection, d["_id"], d, ANY)
            await self._put_script(keys=keys, args=args, client=pipe)
        return [str(r) for r in await pipe.execute()]

    async def delete(self, collection: str, doc_id: str, *, rev: Any = ANY) -> bool:
        mode, expected = ("any", "") if rev is ANY or rev is None else ("rev", str(rev))
        keys = [self._doc_key(collection, doc_id), self._index_key(collection), self._collections_key]
        result = int(await self._delete_script(keys=keys, args=[mode, expected, doc_id, collection]))
        if result < 0:
            raise RevisionConflict(collection, doc_id)
        return result == 1

    async def delete_many(self, collection: str, ids: Iterable[str]) -> int:
        wanted = list(ids)
        if not wanted:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        for doc_id in wanted:
            keys = [self._doc_key(collection, doc_id), self._index_key(collection), self._collections_key]
            await self._delete_script(keys=keys, args=["any", "", doc_id, collection], client=pipe)
        return sum(int(r) == 1 for r in await pipe.execute())

    async def _ids(self, collection: str, limit: int | None = None) -> list[str]:
        stop = -1 if limit is None else max(0, int(limit)) - 1
        if stop < -1 or limit == 0:
            return []
        return list(await self._redis.zrange(self._index_key(collection), 0, stop))

    async def list(self, collection: str, *, limit: int | None = None) -> list[Doc]:
        ids = await self._ids(collection, limit)
        found = await self._fetch(collection, ids)
        return [found[i] for i in ids if i in found]

    async def find(self, collection: str, where: Mapping[str, Any], *,
                   limit: int | None = None) -> builtins.list[Doc]:
        if not where:
            return await self.list(collection, limit=limit)
        out: list[Doc] = []
        ids = await self._ids(collection)
        for start in range(0, len(ids), 500):  # bounded pipelines; stop early once the limit is met
            chunk = ids[start:start + 500]
            found = await self._fetch(collection, chunk)
            out.extend(found[i] for i in chunk if i in found and matches(found[i], where))
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    async def count(self, collection: str, where: Mapping[str, Any] | None = None) -> int:
        if where:
            return len(await self.find(collection, where))
        return int(await self._redis.zcard(self._index_key(collection)))

    async def latest(self, collection: str, prefix: str, limit: int,
                     where: Mapping[str, Any] | None = None) -> builtins.list[Doc]:
        """The index's ids are all scored 0, so a reversed lexicographic range is the prefix, newest first."""
        if limit <= 0:
            return []
        if not prefix:
            return (await self.find(collection, where or {}))[-limit:]
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        ids = list(await self._redis.zrevrangebylex(self._index_key(collection), f"({upper}", f"[{prefix}",
                                                    start=0, num=int(limit)))
        ids.reverse()
        found = await self._fetch(collection, ids)
        return [found[i] for i in ids if i in found]

    async def update(self, collection: str, doc_id: str, fn: Updater) -> Doc | None:
        return await self.update_and_put(collection, doc_id, fn, collection, ())

    async def update_and_put(self, collection: str, doc_id: str, fn: Updater, put_collection: str,
                             docs: Iterable[Mapping[str, Any]]) -> Doc | None:
        """``update``; the new documents are written by the same script as the update (atomically), or by
        themselves when ``fn`` changes nothing."""
        items = list(docs)
        key = (collection, doc_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            for attempt in range(self.max_update_attempts):
                current = await self.get(collection, doc_id)
                new = fn(copy_doc(current))
                if new is None:
                    if items:
                        await self.put_many(put_collection, items)
                    return current
                try:
                    rev = await self._put_with(collection, doc_id, new, None if current is None else current["_rev"],
                                               put_collection, items)
                except RevisionConflict:  # another process wrote in between: re-read and re-apply
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
                    continue
                stored = copy_doc(dict(new))
                stored["_id"], stored["_rev"] = doc_id, rev
                return stored
        raise RevisionConflict(collection, doc_id)

    async def _put_with(self, collection: str, doc_id: str, doc: Mapping[str, Any], rev: Any, put_collection: str,
                        items: builtins.list[Mapping[str, Any]]) -> str:
        if not items:
            return await self.put(collection, doc_id, doc, rev=rev)
        keys, args = self._put_args(collection, doc_id, doc, rev)
        keys.append(self._index_key(put_collection))
        args.append(put_collection)
        for d in items:
            keys.append(self._doc_key(put_collection, d["_id"]))
            args += [d["_id"], _dump(d), random_hex(8)]
        new_rev = await self._put_with_script(keys=keys, args=args)
        if not new_rev:
            raise RevisionConflict(collection, doc_id)
        return str(new_rev)

    async def collections(self) -> builtins.list[str]:
        return sorted(await self._redis.smembers(self._collections_key))
