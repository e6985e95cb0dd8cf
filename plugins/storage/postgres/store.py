"""PostgreSQL DocumentStore on an asyncpg connection pool.

One table keyed by (collection, id). ``body`` is JSONB so the database answers equality queries
(``->>`` on string fields, backed by expression indexes on the fields services query by; containment
``@>`` for other scalars); ``raw`` keeps the JSON text exactly as written, because JSONB reorders keys and
the wire contract fixes key order. ``_id`` and ``_rev`` live in their own columns and are written back
into the document on read, in the place they had when it was written.

Revisions are compare-and-set in the database: create-only is ``INSERT ... ON CONFLICT DO NOTHING``, a
given revision is ``UPDATE ... WHERE rev = $n``, and an unconditional write is an upsert whose new
revision is computed from the stored one in the same statement. ``update`` locks the row
(``SELECT ... FOR UPDATE``) so concurrent read-modify-writes never lose one. Ids sort bytewise
(``COLLATE "C"``), as in the SQLite store. The schema is created or migrated at ``open`` under an
advisory lock, so several API processes may start at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from gofannon.errors import BadRequest, RevisionConflict, ServiceUnavailable
from gofannon.ids import random_hex
from gofannon.jsontext import SURROGATE, escape_surrogates
from gofannon.store import ANY, Doc, StoreHelpers, Updater, matches, next_rev

if TYPE_CHECKING:  # asyncpg is imported only when this backend is opened
    import asyncpg

T = TypeVar("T")

TABLE = "gofannon_docs"
INDEXED_FIELDS = ("ownerId", "agentId", "userId", "namespace", "status", "userUid")
#: Fields indexed since the second migration: workspace members by uid, a workspace's resources and members.
INDEXED_FIELDS_2 = ("uid", "workspaceId")
_LOCK_KEY = 0x60FA_0001  # advisory lock held while migrating

#: Schema migrations, applied in order; the number of applied ones is kept in ``gofannon_schema``.
MIGRATIONS: list[list[str]] = [
    [
        (
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            ' coll text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, rev text NOT NULL,'
            " body jsonb NOT NULL, raw text NOT NULL, PRIMARY KEY (coll, id))"
        ),
        *(
            f'CREATE INDEX IF NOT EXISTS {TABLE}_{f.lower()} ON {TABLE} (coll, (body->>\'{f}\'))'
            for f in INDEXED_FIELDS
        ),
    ],
    [f'CREATE INDEX IF NOT EXISTS {TABLE}_{f.lower()} ON {TABLE} (coll, (body->>\'{f}\'))' for f in INDEXED_FIELDS_2],
]


def _dump(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _strip_nul(value: Any) -> Any:
    """JSONB cannot hold U+0000 nor half a surrogate pair; the query copy gets U+FFFD instead (``raw`` keeps the
    original, the surrogate as its escape)."""
    if isinstance(value, str):
        return SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    return value



def _literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on by default since PostgreSQL 9.1)."""
    if "\x00" in text:
        raise ValueError("field names cannot contain NUL")
    return "'" + text.replace("'", "''") + "'"


def _masked(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def normalize_dsn(url: str) -> str:
    """Accept SQLAlchemy-style ``postgresql+asyncpg://`` URLs as well as plain ones."""
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)


async def _no_reset(conn: Any) -> None:
    """Released connections skip asyncpg's reset query (a round trip per release): this store leaves no
    session state behind (no LISTEN, no session settings; locks and transactions end with each call)."""


class PostgresStore(StoreHelpers):
    name = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self.dsn = normalize_dsn(dsn)
        self.pool_size = max(1, int(pool_size))
        self._pool: asyncpg.Pool | None = None
        self._asyncpg: Any = None

    @classmethod
    def from_settings(cls, settings: Any) -> PostgresStore:
        url = settings.database_url
        if not url:
            raise RuntimeError("GOFANNON_STORAGE=postgres needs DATABASE_URL (e.g. postgresql://user:pw@host:5432/gofannon)")
        return cls(url, pool_size=settings.database_pool_size)

    # -- plumbing -------------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        import asyncpg

        self._asyncpg = asyncpg
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=min(2, self.pool_size),
                                                   max_size=self.pool_size, reset=_no_reset)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise RuntimeError(f"cannot connect to PostgreSQL at {_masked(self.dsn)}: {exc}") from exc
        try:
            await self.migrate()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def migrate(self) -> int:
        """Apply the migrations this database lacks; returns the schema version."""
        async with self._acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                await conn.execute("CREATE TABLE IF NOT EXISTS gofannon_schema (version integer NOT NULL)")
                version = await conn.fetchval("SELECT max(version) FROM gofannon_schema") or 0
                for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                    for stmt in statements:
                        await conn.execute(stmt)
                    await conn.execute("INSERT INTO gofannon_schema (version) VALUES ($1)", number)
                return len(MIGRATIONS)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _acquire(self) -> Any:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        return self._pool.acquire()

    def _lost(self, exc: BaseException) -> bool:
        apg = self._asyncpg
        return isinstance(exc, (apg.exceptions.ConnectionDoesNotExistError, apg.exceptions.InterfaceError,
                                apg.exceptions.PostgresConnectionError, apg.exceptions.CannotConnectNowError,
                                ConnectionError, OSError))

    async def _run(self, op: Callable[[Any], Awaitable[T]], *, retry: bool | Callable[[], bool] = True) -> T:
        """Run ``op(conn)``; a connection lost to a database restart is retried once on a fresh one when
        ``retry`` says the operation is safe to repeat; otherwise it becomes a 503."""
        for attempt in (1, 2):
            try:
                async with self._acquire() as conn:
                    return await op(conn)
            except RevisionConflict:
                raise
            except UnicodeError as exc:
                raise BadRequest("The data holds text that is not valid Unicode (an unpaired surrogate)") from exc
            except Exception as exc:
                if isinstance(exc, self._asyncpg.exceptions.DataError):  # e.g. U+0000 in an id or a value
                    raise BadRequest(f"The database cannot store this data: {exc}") from exc
                if not self._lost(exc):
                    raise
                if attempt == 2 or not (retry() if callable(retry) else retry):
                    raise ServiceUnavailable(f"The database connection was lost: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _doc(doc_id: str, rev: str, raw: str) -> Doc:
        doc = json.loads(raw)
        doc["_id"], doc["_rev"] = doc_id, rev
        return doc

    @staticmethod
    def _texts(doc_id: str, doc: Mapping[str, Any]) -> tuple[str, str]:
        """(raw text, JSONB text) of a document as stored; ``_rev`` is filled in on read."""
        body = dict(doc)
        body["_id"], body["_rev"] = doc_id, ""
        text = _dump(body)
        raw = escape_surrogates(text)  # half a surrogate pair kept as its escape (the same text when there is none)
        if raw is text and "\\u0000" not in raw:
            return raw, raw
        return raw, _dump(_strip_nul(body))  # JSONB gets U+FFFD for U+0000 and half surrogate pairs

    # -- primitives -----------------------------------------------------------------------------------
    async def get(self, collection: str, doc_id: str) -> Doc | None:
        row = await self._run(lambda c: c.fetchrow(
            f"SELECT rev, raw FROM {TABLE} WHERE coll=$1 AND id=$2", collection, doc_id))
        return self._doc(doc_id, row["rev"], row["raw"]) if row else None

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Doc | None]:
        wanted = list(ids)
        rows = await self._run(lambda c: c.fetch(
            f"SELECT id, rev, raw FROM {TABLE} WHERE coll=$1 AND id = ANY($2::text[])", collection, wanted))
        found = {r["id"]: self._doc(r["id"], r["rev"], r["raw"]) for r in rows}
        return {i: found.get(i) for i in wanted}

    _UPSERT = (
        f"INSERT INTO {TABLE} (coll, id, rev, body, raw) VALUES ($1, $2, '1-' || $4::text, $3::text::jsonb, $5::text)"
        f" ON CONFLICT (coll, id) DO UPDATE SET"
        f" rev = (split_part({TABLE}.rev, '-', 1)::bigint + 1)::text || '-' || $4::text,"
        f" body = EXCLUDED.body, raw = EXCLUDED.raw RETURNING rev"
    )

    async def put(self, collection: str, doc_id: str, doc: Mapping[str, Any], *, rev: Any = ANY) -> str:
        raw, query = self._texts(doc_id, doc)
        if rev is ANY:
            nonce = random_hex(8)
            return await self._run(lambda c: c.fetchval(self._UPSERT, collection, doc_id, query, nonce, raw))
        new_rev = next_rev(rev)
        if rev is None:
            sql = (f"INSERT INTO {TABLE} (coll, id, rev, body, raw) VALUES ($1, $2, $3, $4::text::jsonb, $5)"
                   " ON CONFLICT (coll, id) DO NOTHING RETURNING rev")
            got = await self._run(lambda c: c.fetchval(sql, collection, doc_id, new_rev, query, raw), retry=False)
        else:
            sql = (f"UPDATE {TABLE} SET rev=$3, body=$4::text::jsonb, raw=$5 WHERE coll=$1 AND id=$2 AND rev=$6"
                   " RETURNING rev")
            got = await self._run(lambda c: c.fetchval(sql, collection, doc_id, new_rev, query, raw, str(rev)),
                                  retry=False)
        if got is None:
            raise RevisionConflict(collection, doc_id)
        return str(got)

    async def put_many(self, collection: str, docs: Iterable[Mapping[str, Any]]) -> list[str]:
        items = list(docs)
        if not items:
            return []
        last: dict[str, tuple[str, str]] = {}
        for d in items:  # one row per id: the last document given for it wins, as sequential puts would
            last[d["_id"]] = self._texts(d["_id"], d)
        rows = await self._run(lambda c: c.fetch(self._PUT_MANY, *self._put_many_args(collection, last)))
        revs = {r["id"]: r["rev"] for r in rows}
        return [revs[d["_id"]] for d in items]

    _PUT_MANY = (
        f"INSERT INTO {TABLE} (coll, id, rev, body, raw)"
        " SELECT $1, u.id, '1-' || u.nonce, u.q::jsonb, u.raw"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, q, raw, nonce)"
        f" ON CONFLICT (coll, id) DO UPDATE SET rev = (split_part({TABLE}.rev, '-', 1)::bigint + 1)::text"
        " || '-' || split_part(EXCLUDED.rev, '-', 2), body = EXCLUDED.body, raw = EXCLUDED.raw"
        " RETURNING id, rev"
    )

    @staticmethod
    def _put_many_args(collection: str, last: dict[str, tuple[str, str]]) -> list[Any]:
        ids = list(last)
        return [collection, ids, [last[i][1] for i in ids], [last[i][0] for i in ids],
                [random_hex(8) for _ in ids]]

    async def restore_many(self, collection: str, docs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Write documents keeping the ``_rev`` they carry (``gofannon store copy``): a copy then answers
        exactly as the source did, revisions included. No compare-and-set; not for services."""
        last: dict[str, tuple[str, str, str]] = {}
        for d in docs:
            rev = d.get("_rev") if isinstance(d.get("_rev"), str) and re.match(r"^\d+-", d["_rev"]) else None
            raw, query = self._texts(d["_id"], d)
            last[d["_id"]] = (raw, query, rev or next_rev(None))
        if not last:
            return []
        ids = list(last)
        sql = (
            f"INSERT INTO {TABLE} (coll, id, rev, body, raw)"
            " SELECT $1, u.id, u.rev, u.q::jsonb, u.raw"
            " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, q, raw, rev)"
            " ON CONFLICT (coll, id) DO UPDATE SET rev = EXCLUDED.rev, body = EXCLUDED.body, raw = EXCLUDED.raw"
        )
        await self._run(lambda c: c.execute(sql, collection, ids, [last[i][1] for i in ids],
                                            [last[i][0] for i in ids], [last[i][2] for i in ids]))
        return [last[i][2] for i in ids]

    async def delete(self, collection: str, doc_id: str, *, rev: Any = ANY) -> bool:
        if rev is ANY:
            return bool(await self._run(lambda c: c.fetchval(
                f"DELETE FROM {TABLE} WHERE coll=$1 AND id=$2 RETURNING true", collection, doc_id)))
        if rev is None:  # "delete only if absent": a no-op, or a conflict when the document exists
            if await self._run(lambda c: c.fetchval(
                    f"SELECT true FROM {TABLE} WHERE coll=$1 AND id=$2", collection, doc_id)):
                raise RevisionConflict(collection, doc_id)
            return False
        deleted = await self._run(lambda c: c.fetchval(
            f"DELETE FROM {TABLE} WHERE coll=$1 AND id=$2 AND rev=$3 RETURNING true", collection, doc_id, str(rev)))
        if not deleted:
            raise RevisionConflict(collection, doc_id)
        return True

    async def delete_many(self, collection: str, ids: Iterable[str]) -> int:
        wanted = list(dict.fromkeys(ids))
        rows = await self._run(lambda c: c.fetch(
            f"DELETE FROM {TABLE} WHERE coll=$1 AND id = ANY($2::text[]) RETURNING id", collection, wanted))
        return len(rows)

    @staticmethod
    def _where(where: Mapping[str, Any], params: list[Any]) -> tuple[list[str], bool]:
        """SQL conditions for equality on each field, and whether they are exact (no Python re-check)."""
        clauses: list[str] = []
        exact = True
        for key, value in where.items():
            field = _literal(str(key))
            if isinstance(value, str):
                params.append(value)
                clauses.append(f"body->>{field} = ${len(params)} AND jsonb_typeof(body->{field}) = 'string'")
            else:
                if isinstance(value, (list, dict)):  # containment is looser than equality for these
                    exact = False
                params.append(_dump({str(key): _strip_nul(value)}))
                clauses.append(f"body @> ${len(params)}::text::jsonb")
        return clauses, exact

    async def list(self, collection: str, *, limit: int | None = None) -> list[Doc]:
        return await self.find(collection, {}, limit=limit)

    async def find(self, collection: str, where: Mapping[str, Any], *, limit: int | None = None) -> list[Doc]:
        params: list[Any] = [collection]
        clauses, exact = self._where(where, params)
        sql = f"SELECT id, rev, raw FROM {TABLE} WHERE coll=$1" + "".join(f" AND {c}" for c in clauses)
        sql += " ORDER BY id"
        if limit is not None and exact:
            sql += f" LIMIT {max(0, int(limit))}"
        rows = await self._run(lambda c: c.fetch(sql, *params))
        docs = [self._doc(r["id"], r["rev"], r["raw"]) for r in rows]
        if not exact:
            docs = [d for d in docs if matches(d, where)]
            if limit is not None:
                docs = docs[:limit]
        return docs

    async def count(self, collection: str, where: Mapping[str, Any] | None = None) -> int:
        params: list[Any] = [collection]
        clauses, exact = self._where(where or {}, params)
        if not exact:
            return len(await self.find(collection, where or {}))
        sql = f"SELECT count(*) FROM {TABLE} WHERE coll=$1" + "".join(f" AND {c}" for c in clauses)
        return int(await self._run(lambda c: c.fetchval(sql, *params)))

    async def update(self, collection: str, doc_id: str, fn: Updater) -> Doc | None:
        """Read-modify-write under a row lock. A document that does not exist yet cannot be locked, so a
        racing creator makes the insert find a row; the loop then locks that row and applies ``fn`` again."""
        return await self._update(collection, doc_id, fn, None)

    async def update_and_put(self, collection: str, doc_id: str, fn: Updater, put_collection: str,
                             docs: Iterable[Mapping[str, Any]]) -> Doc | None:
        """``update`` with the new documents written in its transaction."""
        last: dict[str, tuple[str, str]] = {d["_id"]: self._texts(d["_id"], d) for d in docs}
        return await self._update(collection, doc_id, fn, self._put_many_args(put_collection, last) if last else None)

    async def _update(self, collection: str, doc_id: str, fn: Updater, puts: list[Any] | None) -> Doc | None:
        wrote = False

        async def op(conn: Any) -> tuple[bool, Doc | None]:
            nonlocal wrote
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT rev, raw FROM {TABLE} WHERE coll=$1 AND id=$2 FOR UPDATE", collection, doc_id)
                current = self._doc(doc_id, row["rev"], row["raw"]) if row else None
                new = fn(self._doc(doc_id, row["rev"], row["raw"]) if row else None)
                if puts is not None:
                    wrote = True
                    await conn.fetch(self._PUT_MANY, *puts)
                if new is None:
                    return True, current
                raw, query = self._texts(doc_id, new)
                new_rev = next_rev(row["rev"] if row else None)
                wrote = True
                if row is None:
                    got = await conn.fetchval(
                        f"INSERT INTO {TABLE} (coll, id, rev, body, raw) VALUES ($1, $2, $3, $4::text::jsonb, $5)"
                        " ON CONFLICT (coll, id) DO NOTHING RETURNING rev", collection, doc_id, new_rev, query, raw)
                    if got is None:
                        wrote = False
                        return False, None
                else:
                    await conn.execute(
                        f"UPDATE {TABLE} SET rev=$3, body=$4::text::jsonb, raw=$5 WHERE coll=$1 AND id=$2",
                        collection, doc_id, new_rev, query, raw)
            stored = dict(new)
            stored["_id"], stored["_rev"] = doc_id, new_rev
            return True, stored

        for _ in range(self.max_update_attempts):
            wrote = False
            # once the write is sent it may have committed: applying fn again could double-count
            done, result = await self._run(op, retry=lambda: not wrote)
            if done:
                return result
        raise RevisionConflict(collection, doc_id)

    async def collections(self) -> list[str]:
        rows = await self._run(lambda c: c.fetch(f"SELECT DISTINCT coll FROM {TABLE} ORDER BY coll"))
        return [r["coll"] for r in rows]
