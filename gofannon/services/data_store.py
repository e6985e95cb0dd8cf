"""The agent data store: per-user namespaces of key/value records (wire contract §4.2, §11).

Every agent a user runs shares that user's pool; the viewer routes (``/data-store/...``) show the same
records. A record is one document in ``agent_data_store`` whose id is
``<userId>:<namespace>:<base64url(key)>``, so a key lookup is a primary-key read and a namespace is a
``find`` on the indexed ``userId``/``namespace`` fields. Writes go through ``store.update`` (atomic
read-modify-write), so two agents setting the same key never lose each other's metadata or counters.

The sandbox broker calls :func:`perform` with an operation name from agent code; it validates the
arguments, runs the operation as the calling user and appends the ops-log entry the UI's timeline shows.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from gofannon.errors import BadRequest, PayloadTooLarge
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

COLLECTION = "agent_data_store"
DEFAULT_NAMESPACE = "default"
MAX_KEY_CHARS = 1024
MAX_NAMESPACE_CHARS = 256
#: Longest ``valuePreview`` in an ops-log entry, before the ellipsis.
PREVIEW_CHARS = 200
#: Keys listed in a ``set_many``/``delete_many`` ops-log entry.
LOG_KEYS = 10
#: Entries one run's ops log keeps; later operations still run but are not logged.
MAX_OPS_LOG = 2000

OPS = ("get", "set", "delete", "delete_many", "list_keys", "list_namespaces", "get_all", "get_many",
       "set_many", "clear")


# -- ids, validation, sizes -------------------------------------------------------------------------------
def doc_id(user_id: str, namespace: str, key: str) -> str:
    safe = base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")
    return f"{user_id}:{namespace}:{safe}"


def check_namespace(namespace: Any) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise BadRequest("Namespace must be a non-empty string")
    if len(namespace) > MAX_NAMESPACE_CHARS:
        raise BadRequest(f"Namespace is too long ({len(namespace)} characters; limit {MAX_NAMESPACE_CHARS})")
    return namespace


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise BadRequest("Key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise BadRequest(f"Key is too long ({len(key)} characters; limit {MAX_KEY_CHARS})")
    return key


def _check_keys(keys: Any) -> list[str]:
    if not isinstance(keys, (list, tuple)):
        raise BadRequest("Keys must be a list of strings")
    return [check_key(k) for k in keys]


def value_size(value: Any) -> int:
    """Bytes of the value's JSON form: what the record costs and what the viewer shows."""
    try:
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    except (TypeError, ValueError):
        return 0


def _check_value(kernel: "Kernel", value: Any) -> None:
    try:
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"Value is not JSON-serializable: {exc}") from None
    limit = kernel.settings.data_store_max_value_bytes
    size = len(raw.encode("utf-8"))
    if size > limit:
        raise PayloadTooLarge(f"Value too large ({size} bytes; limit {limit} bytes)")


def _check_metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise BadRequest("Metadata must be an object")
    return dict(metadata)


def public_record(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the viewer shows it (the stored document without its revision)."""
    return {k: v for k, v in doc.items() if k != "_rev"}


# -- operations --------------------------------------------------------------------------------------------
async def _touch(kernel: "Kernel", ids: Iterable[str], agent_name: str) -> dict[str, dict[str, Any]]:
    """Bump access fields of existing records atomically; returns the updated documents by id."""
    now = now_iso()

    def bump(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        doc["lastAccessedByAgent"] = agent_name
        doc["lastAccessedAt"] = now
        doc["accessCount"] = int(doc.get("accessCount") or 0) + 1
        return doc

    out: dict[str, dict[str, Any]] = {}
    for i in ids:
        doc = await kernel.store.update(COLLECTION, i, bump)
        if doc is not None:
            out[i] = doc
    return out


async def get_record(kernel: "Kernel", user_id: str, namespace: str, key: str,
                     agent_name: str | None = None) -> dict[str, Any] | None:
    """The record, or None. An agent's read (``agent_name`` given) bumps the access fields."""
    i = doc_id(user_id, check_namespace(namespace), check_key(key))
    if agent_name:
        return (await _touch(kernel, [i], agent_name)).get(i)
    return await kernel.store.get(COLLECTION, i)


async def get(kernel: "Kernel", user_id: str, namespace: str, key: str, default: Any = None,
              agent_name: str | None = None) -> Any:
    doc = await get_record(kernel, user_id, namespace, key, agent_name)
    return doc.get("value") if doc is not None else default


async def set(kernel: "Kernel", user_id: str, namespace: str, key: str, value: Any,
              metadata: Mapping[str, Any] | None = None, agent_name: str | None = None) -> dict[str, Any]:
    """Create or replace a value; metadata merges into what is stored; creation fields are kept."""
    check_namespace(namespace)
    check_key(key)
    _check_value(kernel, value)
    meta = _check_metadata(metadata)
    return await _write(kernel, user_id, namespace, key, value, meta, agent_name)


async def _write(kernel: "Kernel", user_id: str, namespace: str, key: str, value: Any,
                 meta: dict[str, Any] | None, agent_name: str | None) -> dict[str, Any]:
    now = now_iso()

    def merge(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            return {
                "userId": user_id, "namespace": namespace, "key": key, "value": value,
                "metadata": meta or {}, "createdByAgent": agent_name, "lastAccessedByAgent": agent_name,
                "accessCount": 0, "createdAt": now, "updatedAt": now,
                "lastAccessedAt": now if agent_name else None,
            }
        doc["value"] = value
        doc["updatedAt"] = now
        if meta:
            doc["metadata"] = {**(doc.get("metadata") or {}), **meta}
        if agent_name:
            doc["lastAccessedByAgent"] = agent_name
            doc["lastAccessedAt"] = now
        return doc

    stored = await kernel.store.update(COLLECTION, doc_id(user_id, namespace, key), merge)
    assert stored is not None
    return stored


async def delete(kernel: "Kernel", user_id: str, namespace: str, key: str) -> bool:
    return bool(await kernel.store.delete(COLLECTION, doc_id(user_id, check_namespace(namespace), check_key(key))))


async def delete_many(kernel: "Kernel", user_id: str, namespace: str, keys: Iterable[str]) -> int:
    check_namespace(namespace)
    ids = [doc_id(user_id, namespace, k) for k in _check_keys(list(keys))]
    return int(await kernel.store.delete_many(COLLECTION, ids)) if ids else 0


async def _records(kernel: "Kernel", user_id: str, namespace: str) -> list[dict[str, Any]]:
    docs = await kernel.store.find(COLLECTION, {"userId": user_id, "namespace": check_namespace(namespace)})
    return sorted(docs, key=lambda d: str(d.get("key", "")))


async def list_keys(kernel: "Kernel", user_id: str, namespace: str, prefix: str | None = None) -> list[str]:
    if prefix is not None and not isinstance(prefix, str):
        raise BadRequest("Prefix must be a string")
    keys = [str(d.get("key", "")) for d in await _records(kernel, user_id, namespace)]
    return [k for k in keys if prefix is None or k.startswith(prefix)]


async def list_namespaces(kernel: "Kernel", user_id: str) -> list[str]:
    docs = await kernel.store.find(COLLECTION, {"userId": user_id})
    return sorted({str(d.get("namespace") or DEFAULT_NAMESPACE) for d in docs})


async def get_all(kernel: "Kernel", user_id: str, namespace: str, agent_name: str | None = None) -> dict[str, Any]:
    docs = await _records(kernel, user_id, namespace)
    if agent_name and docs:
        await _touch(kernel, [d["_id"] for d in docs], agent_name)
    return {str(d.get("key", "")): d.get("value") for d in docs}


async def get_many(kernel: "Kernel", user_id: str, namespace: str, keys: Iterable[str],
                   agent_name: str | None = None) -> dict[str, Any]:
    """Values of the keys that exist (missing keys are omitted)."""
    check_namespace(namespace)
    wanted = _check_keys(list(keys))
    ids = {doc_id(user_id, namespace, k): k for k in wanted}
    found = await kernel.store.get_many(COLLECTION, list(ids))
    out = {ids[i]: d.get("value") for i, d in found.items() if d is not None}
    if agent_name and out:
        await _touch(kernel, [i for i, d in found.items() if d is not None], agent_name)
    return out


async def set_many(kernel: "Kernel", user_id: str, namespace: str, items: Mapping[str, Any],
                   metadata: Mapping[str, Any] | None = None, agent_name: str | None = None) -> int:
    """Write every item (all are validated before any is written); returns how many were written."""
    check_namespace(namespace)
    if not isinstance(items, Mapping):
        raise BadRequest("Items must be an object of key → value")
    meta = _check_metadata(metadata)
    for k, v in items.items():
        check_key(k)
        _check_value(kernel, v)
    for k, v in items.items():
        await _write(kernel, user_id, namespace, k, v, meta, agent_name)
    return len(items)


async def clear(kernel: "Kernel", user_id: str, namespace: str) -> int:
    """Delete every record of the namespace; returns how many were deleted."""
    docs = await _records(kernel, user_id, namespace)
    return int(await kernel.store.delete_many(COLLECTION, [d["_id"] for d in docs])) if docs else 0


# -- viewer --------------------------------------------------------------------------------------------------
def _stats(namespace: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    agents: dict[str, None] = {}  # (this module's ``set`` is the data-store write)
    updated: str | None = None
    for d in docs:
        for field in ("createdByAgent", "lastAccessedByAgent"):
            if d.get(field):
                agents[str(d[field])] = None
        ts = d.get("updatedAt")
        if isinstance(ts, str) and (updated is None or ts > updated):
            updated = ts
    return {
        "namespace": namespace,
        "recordCount": len(docs),
        "sizeBytes": sum(value_size(d.get("value")) for d in docs),
        "agents": sorted(agents),
        "updatedAt": updated,
    }


async def namespace_stats(kernel: "Kernel", user_id: str, namespace: str) -> dict[str, Any]:
    """One namespace's stats; an empty (or unknown) namespace has zeros."""
    return _stats(namespace, await _records(kernel, user_id, namespace))


async def all_namespace_stats(kernel: "Kernel", user_id: str) -> dict[str, Any]:
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for d in await kernel.store.find(COLLECTION, {"userId": user_id}):
        by_ns.setdefault(str(d.get("namespace") or DEFAULT_NAMESPACE), []).append(d)
    stats = [_stats(ns, by_ns[ns]) for ns in sorted(by_ns)]
    return {
        "namespaces": stats,
        "totalRecordCount": sum(s["recordCount"] for s in stats),
        "totalSizeBytes": sum(s["sizeBytes"] for s in stats),
    }


async def list_records(kernel: "Kernel", user_id: str, namespace: str) -> list[dict[str, Any]]:
    return [public_record(d) for d in await _records(kernel, user_id, namespace)]


# -- ops log and the broker's entry point ------------------------------------------------------------------
def preview(value: Any) -> str | None:
    """A display-safe preview of a value: its JSON, cut at 200 characters plus an ellipsis."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text[:PREVIEW_CHARS] + "…" if len(text) > PREVIEW_CHARS else text


def ops_entry(op: str, namespace: str, agent: str | None, **fields: Any) -> dict[str, Any]:
    """One ops-log entry ``{op, namespace, agent, ts, ...op-specific fields}``."""
    return {"op": op, "namespace": namespace, "agent": agent, "ts": now_iso(), **fields}


async def perform(kernel: "Kernel", user_id: str, op: str, args: Mapping[str, Any] | None = None, *,
                  namespace: str = DEFAULT_NAMESPACE, agent_name: str | None = None,
                  ops_log: list[dict[str, Any]] | None = None) -> Any:
    """Run one ``data_store`` method of agent code as ``user_id`` and log it.

    ``op`` is the proxy's method name (``get``, ``set``, ``delete``, ``delete_many``, ``list_keys``,
    ``list_namespaces``, ``get_all``, ``get_many``, ``set_many``, ``clear``); ``args`` its keyword
    arguments (``key``, ``default``, ``value``, ``metadata``, ``keys``, ``prefix``, ``items``). Returns
    what the proxy method returns. Bad arguments raise ``BadRequest``; an oversized value
    ``PayloadTooLarge``. ``ops_log``, when given, receives the entry (bounded to ``MAX_OPS_LOG``).
    """
    a = dict(args or {})
    ns = check_namespace(namespace)
    result: Any
    extra: dict[str, Any]
    if op in ("get", "set", "delete"):
        key = check_key(a.get("key"))
    if op == "get":
        doc = await get_record(kernel, user_id, ns, key, agent_name)
        result = doc.get("value") if doc is not None else a.get("default")
        extra = {"key": a.get("key"), "found": doc is not None, "valuePreview": preview(result)}
    elif op == "set":
        await set(kernel, user_id, ns, key, a.get("value"), a.get("metadata"), agent_name)
        result = None
        extra = {"key": a.get("key"), "valuePreview": preview(a.get("value"))}
    elif op == "delete":
        result = await delete(kernel, user_id, ns, key)
        extra = {"key": a.get("key"), "found": result}
    elif op == "delete_many":
        keys = _check_keys(a.get("keys"))
        result = await delete_many(kernel, user_id, ns, keys)
        extra = {"requested": len(keys), "count": result, "keys": keys[:LOG_KEYS]}
    elif op == "list_keys":
        result = await list_keys(kernel, user_id, ns, a.get("prefix"))
        extra = {"prefix": a.get("prefix"), "count": len(result)}
    elif op == "list_namespaces":
        result = await list_namespaces(kernel, user_id)
        extra = {"count": len(result)}
    elif op == "get_all":
        result = await get_all(kernel, user_id, ns, agent_name)
        extra = {"count": len(result)}
    elif op == "get_many":
        keys = _check_keys(a.get("keys"))
        result = await get_many(kernel, user_id, ns, keys, agent_name)
        extra = {"requested": len(keys), "found": len(result)}
    elif op == "set_many":
        items = a.get("items")
        result = await set_many(kernel, user_id, ns, items, a.get("metadata"), agent_name)  # type: ignore[arg-type]
        extra = {"count": result, "keys": list(items)[:LOG_KEYS]}  # type: ignore[arg-type]
    elif op == "clear":
        result = await clear(kernel, user_id, ns)
        extra = {"count": result}
    else:
        raise BadRequest(f"Unknown data_store operation '{op}'")
    if ops_log is not None and len(ops_log) < MAX_OPS_LOG:
        ops_log.append(ops_entry(op, ns, agent_name, **extra))
    return result


__all__ = [
    "COLLECTION", "DEFAULT_NAMESPACE", "OPS", "all_namespace_stats", "check_key", "check_namespace", "clear",
    "delete", "delete_many", "doc_id", "get", "get_all", "get_many", "get_record", "list_keys",
    "list_namespaces", "list_records", "namespace_stats", "ops_entry", "perform", "preview", "public_record",
    "set", "set_many", "value_size",
]
