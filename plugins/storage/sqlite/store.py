"""SQLite DocumentStore: WAL, one writing connection on one dedicated thread, so the event loop never waits
for a write; point reads (``get`` and small ``get_many``) run on the event loop on a second, read-only
connection, as a WAL reader never waits for writers (a busy reader falls back to the store thread).

Documents live in one table keyed by (collection, id). Equality queries are pre-filtered in SQL with
``json_extract`` (expression indexes cover the fields services query by) and checked exactly in Python,
so ``1``, ``true`` and ``"1"`` stay distinct. ``update`` runs its read-modify-write inside one
``BEGIN IMMEDIATE`` transaction on the store thread: no retries, no lost update.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import sqlite3
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from gofannon.errors import RevisionConflict
from gofannon.jsontext import encoder, escape_surrogates
from gofannon.store import ANY, Doc, StoreHelpers, Updater, check_rev, matches, next_rev

T = TypeVar("T")

#: How long a read on the event loop may wait for a busy database before it goes to the store thread instead.
READ_BUSY_S = 0.05
#: ``get_many`` of at most this many ids reads on the event loop; larger ones on the store thread.
SMALL_READ = 50
#: The fields services find documents by, each with a partial index; most selective first: a ``find`` on several
#: of them reads through the first one's index.
INDEXED_FIELDS = ("agentId", "ownerId", "userId", "uid", "workspaceId", "namespace", "status")
_INDEX_RANK = {f: i for i, f in enumerate(INDEXED_FIELDS)}
#: Slots of the change-stamp file (``stamp``): a document's slot is a hash of its collection and id, so two
#: documents that share one merely make each other's readers read afresh.
STAMP_SLOTS = 4096
_STAMP = struct.Struct("<Q")

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS docs (coll TEXT NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL, body TEXT NOT NULL,"
    " PRIMARY KEY (coll, id)) WITHOUT ROWID",
    # Partial: a document without the field (most documents lack most of them) is in none of these indexes, so
    # writing it costs no index entry; a query's ``json_extract(...) = ?`` implies ``IS NOT NULL``, so the planner
    # may still use them. (A usage entry, written for every LLM call, went from five index entries to one.)
    *(
        f"CREATE INDEX IF NOT EXISTS docs_{f}_set ON docs (coll, json_extract(body, '$.{f}'))"
        f" WHERE json_extract(body, '$.{f}') IS NOT NULL"
        for f in INDEXED_FIELDS
    ),
    # The full indexes of earlier versions (every document in each of them): replaced by the partial ones above.
    *(f"DROP INDEX IF EXISTS docs_{f}" for f in INDEXED_FIELDS),
]
#: One field's equality as its index's expression (the path written out, not bound: SQLite matches an expression
#: index only on the same text).
_INDEXED_EQ = {f: f"AND json_extract(body, '$.{f}') = ?" for f in INDEXED_FIELDS}


#: Documents as stored: compact, UTF-8 as is, no NaN (the C encoder built once, not per write).
_encode = encoder(ensure_ascii=False, allow_nan=False)


def _dump(doc: Any) -> str:
    return escape_surrogates(_encode(doc))  # half a surrogate pair (from a JSON escape) kept as its escape


def _slot(collection: str, doc_id: str) -> int:
    """The byte offset of a document's stamp (the same in every process: not Python's salted ``hash``)."""
    return (zlib.crc32(f"{collection}\x00{doc_id}".encode()) % STAMP_SLOTS) * _STAMP.size


def _open_stamps(path: str) -> mmap.mmap | None:
    """The database's change-stamp file, mapped shared (every process on this database maps the same one)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        size = STAMP_SLOTS * _STAMP.size
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # processes racing here all grow it to the same size, with zeros
        return mmap.mmap(fd, size)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


class SQLiteStore(StoreHelpers):
    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # used on the event loop's thread only
        self._stamps: mmap.mmap | None = None
        self._touched: list[tuple[str, str]] = []  # what the transaction in progress wrote (store thread only)

    @classmethod
    def from_settings(cls, settings: Any) -> "SQLiteStore":
        return cls(Path(settings.data_dir) / "gofannon.sqlite3")

    # -- plumbing -------------------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise RuntimeError("SQLiteStore is not open")
        conn = self._conn
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

    async def open(self) -> None:
        if self._executor is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gofannon-sqlite")

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            return conn

        self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        if self.path != ":memory:":  # an in-memory database is private to its one connection
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=READ_BUSY_S)
            reader.execute("PRAGMA query_only=1")
            self._reader = reader
            self._stamps = _open_stamps(self.path + "-stamps")

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
        self._executor = None
        if self._stamps is not None:
            self._stamps.close()
            self._stamps = None

    # -- primitives -----------------------------------------------------------------------------------
    def _read_here(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """Run a small read on the event loop's thread: (True, result), or (False, None) when the reader is
        busy (a checkpoint or recovery holds the database) and the caller should go to the store thread."""
        reader = self._reader
        if reader is None:
            return False, None
        try:
            return True, fn(reader)
        except sqlite3.OperationalError:
            return False, None

    def stamp(self, collection: str, doc_id: str) -> int | None:
        """A number that changes (after the commit) whenever the document is written or deleted by any process
        using this database file: a reader that keeps a decoded document may reuse it while the stamp holds.
        Shared memory (``<database>-stamps``, mapped by every process), so reading it costs no system call.
        None for an in-memory database."""
        stamps = self._stamps
        if stamps is None:
            return None
        return int(_STAMP.unpack_from(stamps, _slot(collection, doc_id))[0])

    def _bump(self, touched: list[tuple[str, str]]) -> None:
        stamps = self._stamps
        if stamps is None:
            return
        for collection, doc_id in touched:
            offset = _slot(collection, doc_id)
            _STAMP.pack_into(stamps, offset, (_STAMP.unpack_from(stamps, offset)[0] + 1) & 0xFFFF_FFFF_FFFF_FFFF)

    async def get(self, collection: str, doc_id: str) -> Doc | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT body FROM docs WHERE coll=? AND id=?", (collection, doc_id)).fetchone()
            return row[0] if row else None

        done, body = self._read_here(op)
        if not done:
            body = await self._run(op)
        return json.loads(body) if body is not None else None

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc | None]:
        wanted = list(ids)

        def op(conn: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for doc_id, body in conn.execute(
                    f"SELECT id, body FROM docs WHERE coll=? AND id IN ({marks})", (collection, *chunk)
                ):
                    found[doc_id] = body
            return found

        done, found = self._read_here(op) if len(wanted) <= SMALL_READ else (False, None)
        if not done or found is None:
            found = await self._run(op)
        return {i: (json.loads(found[i]) if i in found else None) for i in wanted}

    def _put_in_tx(self, conn: sqlite3.Connection, collection: str, doc_id: str, doc: Mapping[str, Any], rev: Any) -> str:
        row = conn.execute("SELECT rev FROM docs WHERE coll=? AND id=?", (collection, doc_id)).fetchone()
        current = row[0] if row else None
        check_rev(collection, doc_id, current, rev)
        new_rev = next_rev(current)
        body = dict(doc)
        body["_id"], body["_rev"] = doc_id, new_rev
        conn.execute(
            "INSERT INTO docs (coll, id, rev, body) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (coll, id) DO UPDATE SET rev=excluded.rev, body=excluded.body",
            (collection, doc_id, new_rev, _dump(body)),
        )
        self._touched.append((collection, doc_id))
        return new_rev

    def _tx(self, conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
        """``fn`` in one write transaction; then the stamps of what it wrote move (after the commit, so a reader
        that sees a stamp move and reads afresh finds the new document)."""
        conn.execute("BEGIN IMMEDIATE")
        self._touched = []
        try:
            result = fn()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._bump(self._touched)
        return result

    async def put(self, collection: str, doc_id: str, doc: Mapping[str, Any], *, rev: Any = ANY) -> str:
        return await self._run(lambda conn: self._tx(conn, lambda: self._put_in_tx(conn, collection, doc_id, doc, rev)))

    async def put_many(self, collection: str, docs: Iterable[Mapping[str, Any]]) -> list[str]:
        items = list(docs)
        return await self._run(
            lambda conn: self._tx(conn, lambda: [self._put_in_tx(conn, collection, d["_id"], d, ANY) for d in items])
        )

    async def delete(self, collection: str, doc_id: str, *, rev: Any = ANY) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT rev FROM docs WHERE coll=? AND id=?", (collection, doc_id)).fetchone()
            if row is None:
                if rev is not ANY and rev is not None:
                    raise RevisionConflict(collection, doc_id)
                return False
            check_rev(collection, doc_id, row[0], rev)
            conn.execute("DELETE FROM docs WHERE coll=? AND id=?", (collection, doc_id))
            self._touched.append((collection, doc_id))
            return True

        return await self._run(lambda conn: self._tx(conn, lambda: op(conn)))

    async def delete_many(self, collection: str, ids: Iterable[str]) -> int:
        wanted = list(ids)

        def op(conn: sqlite3.Connection) -> int:
            n = 0
            for doc_id in wanted:
                n += conn.execute("DELETE FROM docs WHERE coll=? AND id=?", (collection, doc_id)).rowcount
                self._touched.append((collection, doc_id))
            return n

        return await self._run(lambda conn: self._tx(conn, lambda: op(conn)))

    async def list(self, collection: str, *, limit: int | None = None) -> list[Doc]:
        return await self.find(collection, {}, limit=limit)

    async def find(self, collection: str, where: Mapping[str, Any], *, limit: int | None = None) -> list[Doc]:
        sql = ["SELECT body FROM docs WHERE coll=?"]
        params: list[Any] = [collection]
        index: str | None = None
        for key, value in where.items():
            if isinstance(value, bool) or value is None:
                sql.append("AND json_type(body, ?) = ?")
                params += ["$." + json.dumps(str(key)), "null" if value is None else ("true" if value else "false")]
            elif isinstance(value, (str, int, float)):
                eq = _INDEXED_EQ.get(key)
                if eq is None:
                    sql.append("AND json_extract(body, ?) = ?")
                    params += ["$." + json.dumps(str(key)), value]
                else:
                    sql.append(eq)
                    params.append(value)
                    if index is None or _INDEX_RANK[key] < _INDEX_RANK[index]:
                        index = key
        if index is not None:
            # Named, not left to the planner: without statistics (no ANALYZE) it prefers scanning the whole
            # collection through the primary key, which holds the bodies, over an index it must look them up from.
            # The index is ordered by (coll, value, id), so the order by id costs no sort.
            sql[0] = f"SELECT body FROM docs INDEXED BY docs_{index}_set WHERE coll=?"
        sql.append("ORDER BY id")
        if limit is not None and not where:
            sql.append(f"LIMIT {int(limit)}")
        query = " ".join(sql)

        def op(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(query, params)]

        docs = [json.loads(body) for body in await self._run(op)]
        if where:
            docs = [d for d in docs if matches(d, where)]
            if limit is not None:
                docs = docs[:limit]
        return docs

    async def list_raw(self, collection: str) -> list[str]:
        """Stored JSON texts, ordered by id, for handlers that pass documents through unchanged."""
        return await self._run(
            lambda conn: [r[0] for r in conn.execute("SELECT body FROM docs WHERE coll=? ORDER BY id", (collection,))]
        )

    async def count(self, collection: str, where: Mapping[str, Any] | None = None) -> int:
        if where:
            return len(await self.find(collection, where))
        return await self._run(
            lambda conn: conn.execute("SELECT COUNT(*) FROM docs WHERE coll=?", (collection,)).fetchone()[0]
        )

    async def update(self, collection: str, doc_id: str, fn: Updater) -> Doc | None:
        return await self.update_and_put(collection, doc_id, fn, collection, ())

    async def update_and_put(self, collection: str, doc_id: str, fn: Updater, put_collection: str,
                             docs: Iterable[Mapping[str, Any]]) -> Doc | None:
        """The update and the new documents in one transaction: one trip to the store thread, one commit."""
        items = list(docs)

        def op(conn: sqlite3.Connection) -> Doc | None:
            row = conn.execute("SELECT body FROM docs WHERE coll=? AND id=?", (collection, doc_id)).fetchone()
            new = fn(json.loads(row[0]) if row else None)
            for d in items:
                self._put_in_tx(conn, put_collection, d["_id"], d, ANY)
            if new is None:  # unchanged: the stored document, decoded afresh (fn may have touched its copy)
                return json.loads(row[0]) if row else None
            rev = self._put_in_tx(conn, collection, doc_id, new, ANY)
            stored = dict(new)
            stored["_id"], stored["_rev"] = doc_id, rev
            return stored

        return await self._run(lambda conn: self._tx(conn, lambda: op(conn)))

    async def latest(self, collection: str, prefix: str, limit: int,
                     where: Mapping[str, Any] | None = None) -> list[Doc]:
        """A backward range scan of the primary key, on the event loop (a small read)."""
        if limit <= 0:
            return []
        if not prefix:
            return (await self.find(collection, where or {}))[-limit:]
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT body FROM docs WHERE coll=? AND id>=? AND id<? ORDER BY id DESC LIMIT ?",
                                (collection, prefix, upper, int(limit))).fetchall()
            return [r[0] for r in reversed(rows)]

        done, bodies = self._read_here(op) if limit <= SMALL_READ else (False, None)
        if not done or bodies is None:
            bodies = await self._run(op)
        return [json.loads(b) for b in bodies]

    async def collections(self) -> list[str]:
        return await self._run(
            lambda conn: [r[0] for r in conn.execute("SELECT DISTINCT coll FROM docs ORDER BY coll")]
        )
