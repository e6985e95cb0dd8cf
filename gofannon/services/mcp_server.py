"""Gofannon as an MCP server: sessions, tools built from deployments, and JSON-RPC dispatch.

The HTTP side (``gofannon/web/mcp_server.py``) is a thin Streamable HTTP adapter; everything that knows the
protocol's methods lives here. Protocol types come from the official SDK's ``mcp_types`` (the models the
``mcp`` package re-exports as ``mcp.types``): requests are validated and results serialised through them.
Dispatch is direct (no ``ServerSession`` and task group per request), which keeps ``tools/list`` and
``tools/call`` within a millisecond of the plain routes; the SDK is imported on the first ``/mcp`` request,
never at kernel import.

Sessions (protocol revisions 2025-06-18 and 2025-11-25) are documents of the shared store
(``mcp_sessions``), so a session begun on one API process continues on any other that shares the store; the
stateless revision 2026-07-28 needs none. A ``tools/call`` runs as ``POST /rest`` does, under a run id derived
from (session id, JSON-RPC request id): ``notifications/cancelled`` reaching any process leaves a stop request
on that run's record, which the process waiting for the call (or the RQ worker running it) acts on.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from gofannon.errors import GofannonError, RevisionConflict
from gofannon.jsontext import local_ref
from gofannon.models.run import RUNS
from gofannon.services import deployments, runs, scopes
from gofannon.services.agents import LIST_VERSION, META
from gofannon.services.ownership import OWNER_FIELD
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.mcp_server")

SESSIONS = "mcp_sessions"
SESSION_TTL = timedelta(hours=24)
#: A session's expiry is pushed forward when less than this much of its life is left (one write per hour at most).
SESSION_REFRESH = timedelta(hours=23)
#: Live sessions one user may hold; a new one ends the oldest past this (clients that never DELETE theirs).
MAX_SESSIONS_PER_USER = 100
SERVER_NAME = "gofannon"
#: Handshake revisions this server speaks (the installed SDK's, from 2025-06-18 on).
MIN_VERSION = "2025-06-18"
#: How often a process with open GET streams looks for deployment changes made by other processes.
CHANGE_POLL_S = 2.0
#: How often a running ``tools/call`` with a progress token reports progress.
PROGRESS_EVERY_S = 1.0
#: How often the process waiting for a call looks for a cancel left by another process.
CANCEL_POLL_S = 1.0
RUN_ID_NAMESPACE = uuid.UUID("7d1c3a52-3f0e-4d8e-9a55-6d6f6e6e6d63")
CATALOG_KEY = "mcp.catalog"
STREAMS_KEY = "mcp.streams"

# JSON-RPC / MCP error codes (mcp_types.jsonrpc has the same values; kept here so errors need no SDK import).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022
#: Implementation-defined (-32000..-32019): the caller's token or budget refuses the call (HTTP 429/401).
REFUSED = -32005


class McpError(Exception):
    """A JSON-RPC error, with the HTTP status it travels with when it answers a whole POST."""

    def __init__(self, code: int, message: str, *, http_status: int = 200, data: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.data = data
        self.headers = headers or {}
        self.req_id: Any = None  # set when the request's id is known before its envelope was accepted

    def payload(self, req_id: Any = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": req_id, "error": error}


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)


# -- the SDK, imported on first use ------------------------------------------------------------------------
_SDK: Any = None


def sdk() -> Any:
    """``mcp_types`` (the SDK's protocol models), imported once, on the first ``/mcp`` request."""
    global _SDK
    if _SDK is None:
        import mcp_types

        _SDK = mcp_types
    return _SDK


_VERSIONS: tuple[str, ...] = ()


def supported_versions() -> tuple[str, ...]:
    """The handshake revisions both this server and the installed SDK speak, oldest first.

    The SDK's 2026-07-28 revision (stateless per-request envelope, ``server/discover``) is not served: a
    client probing it gets -32022 naming these, and the SDK's ``auto`` mode then falls back to ``initialize``.
    """
    global _VERSIONS
    if not _VERSIONS:
        from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, KNOWN_PROTOCOL_VERSIONS

        floor = KNOWN_PROTOCOL_VERSIONS.index(MIN_VERSION)
        _VERSIONS = tuple(v for v in HANDSHAKE_PROTOCOL_VERSIONS if KNOWN_PROTOCOL_VERSIONS.index(v) >= floor)
    return _VERSIONS


_MODERN: tuple[str, ...] | None = None


def modern_versions() -> tuple[str, ...]:
    """The SDK's stateless revisions (2026-07-28): no session, every request carries its envelope in ``_meta``."""
    global _MODERN
    if _MODERN is None:
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        _MODERN = tuple(MODERN_PROTOCOL_VERSIONS)
    return _MODERN


#: HTTP status of a JSON-RPC error on the stateless revisions (as the SDK's own server answers them).
MODERN_HTTP_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, -32020: 400, -32021: 400,
                      UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}
HEADER_MISMATCH = -32020


def modern_error(code: int, message: str, *, data: Any = None) -> McpError:
    return McpError(code, message, http_status=MODERN_HTTP_STATUS.get(code, 200), data=data)


def check_envelope(message: dict[str, Any], headers: Any) -> str:
    """The per-request envelope of a stateless request, checked rung by rung as the SDK's server does
    (``mcp.shared.inbound.classify_inbound_request``, not imported: the ``mcp`` package costs a second to
    import): ``_meta`` carries the protocol version and client capabilities, ``MCP-Protocol-Version``,
    ``Mcp-Method`` and (for ``tools/call``) ``Mcp-Name`` agree with the body, and the version is served."""
    t = sdk()
    raw_params = message.get("params")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        raise modern_error(INVALID_PARAMS, "params._meta must be an object carrying the required "
                           f"{t.PROTOCOL_VERSION_META_KEY!r} and {t.CLIENT_CAPABILITIES_META_KEY!r} envelope keys")
    missing = [k for k in (t.PROTOCOL_VERSION_META_KEY, t.CLIENT_CAPABILITIES_META_KEY) if k not in meta]
    if missing:
        raise modern_error(INVALID_PARAMS,
                           f"params._meta is missing the required envelope key(s): {', '.join(missing)}")
    version = meta[t.PROTOCOL_VERSION_META_KEY]
    if headers.get("MCP-Protocol-Version") != version:
        raise modern_error(HEADER_MISMATCH, "MCP-Protocol-Version header does not match the request's protocol version")
    if headers.get("Mcp-Method") != message.get("method"):
        raise modern_error(HEADER_MISMATCH, "Mcp-Method header does not match the request body's method")
    name = params.get("name") if message.get("method") == "tools/call" else None
    if isinstance(name, str) and _decode_header(headers.get("Mcp-Name")) != name:
        raise modern_error(HEADER_MISMATCH, "Mcp-Name header does not match the request body's 'name' parameter")
    if not isinstance(version, str):
        raise modern_error(INVALID_PARAMS, "the protocol-version envelope value must be a string")
    if version not in modern_versions():
        raise modern_error(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                           data={"supported": list(modern_versions()), "requested": version})
    return version


def _decode_header(value: str | None) -> str | None:
    """An ``Mcp-Name`` value, unwrapping the ``=?base64?...?=`` form clients use for unsafe characters."""
    if value is None or not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    import base64
    import binascii

    try:
        return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def server_info() -> dict[str, Any]:
    from gofannon import __version__

    return {"name": SERVER_NAME, "title": "Gofannon", "version": __version__}


INSTRUCTIONS = ("Each tool is an agent deployed on this Gofannon server; calling one runs it as you, charged to your "
                "budget.")


def shaped(method: str, version: str, result: dict[str, Any]) -> dict[str, Any]:
    """A result in the shape of ``version``'s schema, through the SDK's per-revision result models
    (fields a revision does not know are dropped; stateless revisions get ``resultType`` and the
    ``serverInfo`` stamp)."""
    if version not in modern_versions() and method == "tools/call":
        # Built by the SDK's CallToolResult, whose fields all exist since 2025-06-18 but for ``resultType``.
        return {k: v for k, v in result.items() if k != "resultType"}
    from mcp_types.methods import serialize_server_result

    if version in modern_versions():
        result = {**result, "resultType": "complete",
                  "_meta": {**(result.get("_meta") or {}), sdk().SERVER_INFO_META_KEY: server_info()}}
    return serialize_server_result(method, version, result)  # type: ignore[no-any-return]


def discover(version: str) -> dict[str, Any]:
    """``server/discover``: every revision served, the capabilities, the instructions."""
    return shaped("server/discover", version, {
        "supportedVersions": [*supported_versions(), *modern_versions()],
        "capabilities": {"tools": {"listChanged": True}}, "instructions": INSTRUCTIONS,
        "ttlMs": 0, "cacheScope": "public",
    })


def validate_params(method: str, version: str, params: dict[str, Any] | None) -> None:
    """A stateless request's params against ``version``'s schema (the SDK's per-revision request models)."""
    from pydantic import ValidationError

    from mcp_types.methods import validate_client_request

    try:
        validate_client_request(method, version, params)
    except KeyError:
        raise modern_error(METHOD_NOT_FOUND, f"Method not found: {method}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise modern_error(INVALID_PARAMS, f"Invalid params: {where}: {first['msg']}") from None


def unsupported_version(requested: str) -> McpError:
    supported = [*supported_versions(), *modern_versions()]
    return McpError(UNSUPPORTED_PROTOCOL_VERSION,
                    f"Unsupported MCP-Protocol-Version {requested!r}; this server speaks {', '.join(supported)}",
                    http_status=400, data={"supported": supported, "requested": requested})


def _params(model: Any, params: dict[str, Any] | None) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(params or {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise McpError(INVALID_PARAMS, f"Invalid params: {where}: {first['msg']}") from None


def _result(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)  # type: ignore[no-any-return]


# -- sessions ------------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


async def create_session(kernel: "Kernel", ident: "Identity",
                         params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Answer ``initialize``: a new session in the store, and the ``InitializeResult``."""
    t = sdk()
    init = _params(t.InitializeRequestParams, params)
    supported = supported_versions()
    version = init.protocol_version if init.protocol_version in supported else supported[-1]
    session_id = uuid.uuid4().hex
    now = _now()
    if await kernel.store.count(SESSIONS, {OWNER_FIELD: ident.uid}) >= MAX_SESSIONS_PER_USER:
        held = sorted(await kernel.store.find(SESSIONS, {OWNER_FIELD: ident.uid}),
                      key=lambda d: d.get("createdAt") or "")
        await kernel.store.delete_many(SESSIONS, [d["_id"] for d in held[:len(held) - MAX_SESSIONS_PER_USER + 1]])
    await kernel.store.put(SESSIONS, session_id, {
        OWNER_FIELD: ident.uid, "protocolVersion": version,
        "clientInfo": stored_client_info(init.client_info.model_dump(by_alias=True, mode="json", exclude_none=True)),
        "createdAt": now.isoformat(timespec="microseconds"),
        "expiresAt": (now + SESSION_TTL).isoformat(timespec="microseconds"),
    }, rev=None)
    result = t.InitializeResult(
        protocol_version=version,
        capabilities=t.ServerCapabilities(tools=t.ToolsCapability(list_changed=True)),
        server_info=t.Implementation(**server_info()),
        instructions=INSTRUCTIONS,
    )
    return session_id, _result(result)


#: What a session keeps of ``initialize``'s ``clientInfo``: these fields, each cut to ``CLIENT_INFO_CHARS``
#: characters (icons and the rest are dropped), so the document read on every request stays small.
CLIENT_INFO_FIELDS = ("name", "title", "version", "websiteUrl")
CLIENT_INFO_CHARS = 256


def stored_client_info(info: dict[str, Any]) -> dict[str, str]:
    return {k: info[k][:CLIENT_INFO_CHARS] for k in CLIENT_INFO_FIELDS if isinstance(info.get(k), str)}


async def load_session(kernel: "Kernel", ident: "Identity", session_id: str) -> dict[str, Any]:
    """The caller's live session; another user's, an ended or an expired one is the same 404."""
    doc = await kernel.store.get(SESSIONS, session_id) if 0 < len(session_id) <= 64 else None
    if doc is None or doc.get(OWNER_FIELD) != ident.uid:
        raise McpError(INVALID_REQUEST, "Session not found: it ended, expired or never existed; initialize again",
                       http_status=404)
    expires = doc.get("expiresAt") or ""
    now = _now()
    if expires < now.isoformat(timespec="microseconds"):
        await kernel.store.delete(SESSIONS, session_id)
        raise McpError(INVALID_REQUEST, "Session expired; initialize again", http_status=404)
    if expires < (now + SESSION_REFRESH).isoformat(timespec="microseconds"):
        fresh = (now + SESSION_TTL).isoformat(timespec="microseconds")
        await kernel.store.update(SESSIONS, session_id, lambda d: None if d is None else {**d, "expiresAt": fresh})
    return doc  # type: ignore[no-any-return]


async def end_session(kernel: "Kernel", ident: "Identity", session_id: str) -> None:
    await load_session(kernel, ident, session_id)
    await kernel.store.delete(SESSIONS, session_id)
    streams(kernel).end(session_id)


async def sweep_expired(kernel: "Kernel") -> int:
    """Delete sessions past their expiry (run by the change watcher now and then)."""
    cutoff = _now().isoformat(timespec="microseconds")
    old = [d["_id"] for d in await kernel.store.list(SESSIONS) if (d.get("expiresAt") or "") < cutoff]
    if old:
        await kernel.store.delete_many(SESSIONS, old)
    return len(old)


# -- token scopes --------------------------------------------------------------------------------------
def tool_allowed(ident: "Identity", name: str) -> bool:
    """Whether the caller's token may use the agent ``name``: its ``models`` admit ``agent/<name>`` (as on /v1)."""
    return scopes.may_use(ident, f"agent/{name}")


async def admit(kernel: "Kernel", ident: "Identity", name: str) -> None:
    """The token checks of ``POST /rest/{name}`` (expiry, rpm, spend left), before anything runs."""
    try:
        await scopes.admit(kernel, ident, f"agent/{name}")
        await scopes.check_budget(kernel, ident)
    except GofannonError as exc:
        raise McpError(REFUSED, str(exc.detail), http_status=exc.status, headers=exc.headers) from None


# -- tools ---------------------------------------------------------------------------------------------
_JSON_TYPES = {
    "string": "string", "str": "string", "text": "string", "integer": "integer", "int": "integer",
    "float": "number", "number": "number", "boolean": "boolean", "bool": "boolean", "list": "array",
    "array": "array", "dict": "object", "object": "object",
}


#: Keywords of JSON Schema (draft 2020-12 and the common older ones): a declared schema made only of these is
#: read as JSON Schema, not as the reference's ``{name: type name}``.
_SCHEMA_KEYWORDS = frozenset({
    "$schema", "$id", "$ref", "$defs", "$comment", "$anchor", "definitions", "type", "properties", "required",
    "additionalProperties", "patternProperties", "propertyNames", "minProperties", "maxProperties", "items",
    "prefixItems", "additionalItems", "contains", "minContains", "maxContains", "minItems", "maxItems",
    "uniqueItems", "enum", "const", "anyOf", "oneOf", "allOf", "not", "if", "then", "else", "title",
    "description", "default", "examples", "format", "pattern", "minLength", "maxLength", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "deprecated", "readOnly", "writeOnly",
    "unevaluatedProperties", "unevaluatedItems", "dependentRequired", "dependentSchemas", "contentMediaType",
    "contentEncoding",
})
_SCHEMA_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
#: The one argument a tool whose agent takes a non-object input (``{"type": "array", ...}``) is given: MCP's
#: ``inputSchema`` must be an object, so the agent's schema is wrapped as this property, unwrapped on the call.
WRAPPED_INPUT = "input"


def _type_names(kind: Any) -> bool:
    if isinstance(kind, str):
        return kind in _SCHEMA_TYPES
    return isinstance(kind, list) and bool(kind) and all(isinstance(k, str) and k in _SCHEMA_TYPES for k in kind)


def _is_json_schema(declared: dict[str, Any], *, nested: bool = False) -> bool:
    """Whether ``declared`` is a JSON Schema rather than the reference's ``{name: type name}`` map.

    Every key must be a JSON Schema keyword, and: ``type`` names JSON types (at the top level a lone
    ``{"type": "string"}`` stays the reference's one input called ``type``), or the structure is a schema's
    (``properties`` an object, ``items``/``not`` a schema, ``anyOf``/``oneOf``/``allOf``/``enum`` a list).
    """
    if declared.get("type") == "object" and isinstance(declared.get("properties", {}), dict):
        return True  # always read so; extension keys ("x-...") allowed
    if "$schema" in declared or "$ref" in declared:
        return True
    if not set(declared) <= _SCHEMA_KEYWORDS:
        return False
    if "type" in declared:
        return _type_names(declared["type"]) and (nested or len(declared) > 1)
    return (isinstance(declared.get("properties"), dict) or isinstance(declared.get("items"), (dict, bool))
            or isinstance(declared.get("not"), dict)
            or any(isinstance(declared.get(k), list) for k in ("anyOf", "oneOf", "allOf", "enum")))


def converted(declared: Any) -> dict[str, Any]:
    """A JSON Schema from an agent's schema, of whatever type it declares.

    Agents declare ``{"inputText": "string"}`` (key → type name, the reference's style); every key becomes a
    required property of that JSON type (an unknown type name accepts any value). A value that is itself a map
    is a property's JSON Schema when it reads as one (``{"type": "string", ...}``), else a nested map of the same
    style (``{"opts": {"a": "string"}}``: ``opts`` is an object with a required string ``a``). A schema that
    already is a JSON Schema is used as it is.
    """
    if not isinstance(declared, dict) or not declared:
        return {"type": "object", "properties": {}}
    if _is_json_schema(declared):
        return dict(declared)
    props: dict[str, Any] = {}
    for key, kind in declared.items():
        if isinstance(kind, dict):
            props[key] = dict(kind) if not kind or _is_json_schema(kind, nested=True) else converted(kind)
            continue
        json_type = _JSON_TYPES.get(str(kind).strip().lower())
        props[key] = {"type": json_type, "description": key} if json_type else {"description": f"{key} ({kind})"}
    return {"type": "object", "properties": props, "required": list(props)}


def _as_object_schema(schema: dict[str, Any], depth: int = 0) -> dict[str, Any] | None:
    """``schema`` as an object schema, else None: one that gives ``properties`` but no ``type`` gets
    ``"type": "object"``; a type list with ``object`` in it becomes ``object`` (a tool's arguments are never null);
    a root that is a local ``$ref`` (``{"$ref": "#/definitions/Args", "definitions": ...}``, what zod-to-json-schema
    makes) has its target written in, its definitions kept for the references inside it."""
    kind = schema.get("type")
    if kind == "object":
        return schema
    if isinstance(kind, list) and "object" in kind:
        return {**schema, "type": "object"}
    if kind is not None:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = local_ref(schema, ref)
        if not isinstance(target, dict) or depth >= 8:
            return None
        return _as_object_schema({**{k: v for k, v in schema.items() if k != "$ref"}, **target}, depth + 1)
    if isinstance(schema.get("properties"), dict):
        return {"type": "object", **schema}
    return None


def input_schema(declared: Any) -> tuple[dict[str, Any], bool]:
    """A tool's ``inputSchema`` (MCP wants ``"type": "object"``) and whether the agent's input is wrapped.

    An agent whose input is an object is described as it is; one whose JSON Schema has another type (an array,
    a string, or no ``type``) gets a one-property object, ``{"input": <its schema>}``, and receives that value.
    """
    schema = converted(declared)
    as_object = _as_object_schema(schema)
    if as_object is not None:
        return as_object, False
    # definitions move to the wrapper, the document root, where "#/$defs/..." references resolve
    inner = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
    outer: dict[str, Any] = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    return {"type": "object", "properties": {WRAPPED_INPUT: inner}, "required": [WRAPPED_INPUT], **outer}, True


def json_schema(declared: Any) -> dict[str, Any]:
    """The tool ``inputSchema`` of an agent's ``inputSchema`` (see ``input_schema``)."""
    return input_schema(declared)[0]


def output_schema(declared: Any) -> dict[str, Any] | None:
    """A tool's ``outputSchema``: an object schema, else none (MCP's structured results are objects)."""
    if not declared:
        return None
    return _as_object_schema(converted(declared))


class CatalogCache:
    """The current ``Catalog`` per workspace (None = the public deployments) of this process; each is replaced
    as a whole, so readers of an old one stay consistent."""

    SIZE = 256

    def __init__(self) -> None:
        self.current: dict[str | None, Catalog] = {}


@dataclass
class Catalog:
    """Every deployed agent as an MCP tool, built once per change of the deployments or agents."""

    version: tuple[str, str] = ("", "")
    #: name → (the tool's JSON text, the tool as a dict)
    tools: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    fingerprint: str = ""


async def _versions(kernel: "Kernel") -> tuple[str, str]:
    agents_meta, deps_meta = await asyncio.gather(
        kernel.store.get(META, LIST_VERSION),
        kernel.store.get(deployments.CHANGES, deployments.CHANGE_MARKER))
    return ((agents_meta or {}).get("_rev") or "-", (deps_meta or {}).get("_rev") or "-")


def tool_for(name: str, agent: dict[str, Any]) -> dict[str, Any]:
    t = sdk()
    output = agent.get("outputSchema")
    tool = t.Tool(
        name=name, title=agent.get("name") or name,
        description=agent.get("description") or agent.get("docstring") or f"The deployed agent {name}.",
        input_schema=json_schema(agent.get("inputSchema")),
        output_schema=output_schema(output),
    )
    return _result(tool)


async def catalog(kernel: "Kernel", workspace_id: str | None = None) -> Catalog:
    """The tools of the public deployments, plus those of the shared workspace ``workspace_id`` (the caller's
    active one, already checked), rebuilt only when an agent or a deployment changed (in any process)."""
    holder = kernel.component(CATALOG_KEY, CatalogCache)
    cache = holder.current.get(workspace_id)
    version = await _versions(kernel)
    if cache is not None and version == cache.version:
        return cache
    tools: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, agent in sorted(await deployments.deployed_agents(kernel, workspace_id)):
        tool = tool_for(name, agent)
        tools[name] = (dumps(tool), tool)
    text = "\n".join(t[0] for t in tools.values())
    # The deployments marker is part of the fingerprint: a deploy or undeploy in any workspace is a change.
    fresh = Catalog(version=version, tools=tools,
                    fingerprint=hashlib.sha256(f"{version[1]}\n{text}".encode()).hexdigest())
    if workspace_id not in holder.current and len(holder.current) >= CatalogCache.SIZE:
        holder.current.clear()
    holder.current[workspace_id] = fresh
    return fresh


async def list_tools_json(kernel: "Kernel", ident: "Identity", version: str | None = None, *,
                          workspace_id: str | None = None) -> str:
    """The ``ListToolsResult`` as JSON text, assembled from each tool's cached encoding.

    On the stateless revisions it carries the caching directives (``ttlMs`` 0, ``cacheScope`` private: the
    list depends on the caller) and the ``serverInfo`` stamp."""
    cat = await catalog(kernel, workspace_id)
    parts = ",".join(text for name, (text, _tool) in cat.tools.items() if tool_allowed(ident, name))
    if version is None or version not in modern_versions():
        return '{"tools":[' + parts + "]}"
    meta = dumps({sdk().SERVER_INFO_META_KEY: server_info()})
    return '{"tools":[' + parts + '],"ttlMs":0,"cacheScope":"private","resultType":"complete","_meta":' + meta + "}"


# -- tools/call ----------------------------------------------------------------------------------------
def run_id_for(session_id: str, req_id: Any) -> str:
    """The run record of a request: derived, so a cancel arriving at any process finds it without a lookup."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{session_id}\x00{json.dumps(req_id)}"))


@dataclass
class ToolCall:
    name: str
    agent: dict[str, Any]
    arguments: Any
    progress_token: Any = None
    run_id: str = ""
    owner: str = ""
    started_at: str = ""
    workspace_id: str | None = None
    #: The answer of a call refused before it ran (its arguments do not fit the inputSchema): a result with isError.
    refused: dict[str, Any] | None = None


INFLIGHT_KEY = "mcp.inflight"
CANCELLED_ERROR = "Cancelled by the MCP client."
DROPPED_ERROR = "Stopped: the MCP client closed the connection."


def inflight(kernel: "Kernel") -> dict[str, ToolCall]:
    """The tool calls this process is waiting for, by run id."""
    return kernel.component(INFLIGHT_KEY, dict)


async def prepare_call(kernel: "Kernel", ident: "Identity", params: dict[str, Any] | None) -> ToolCall:
    """Validate a ``tools/call`` before anything runs: its params, the tool, the token's scope, the input."""
    t = sdk()
    call = _params(t.CallToolRequestParams, params)
    if not tool_allowed(ident, call.name):
        raise McpError(INVALID_PARAMS, f"Unknown tool: {call.name}")
    try:
        agent = await deployments.load_deployed(kernel, call.name, ident)  # shared workspaces: members only
    except GofannonError:
        raise McpError(INVALID_PARAMS, f"Unknown tool: {call.name}") from None
    arguments: Any = dict(call.arguments or {})
    schema, wrapped = input_schema(agent.get("inputSchema"))
    problems = argument_problems(schema, arguments)
    if problems:  # a tool execution error, not a protocol one: the model reads it and can correct its call
        text = f"Invalid arguments for {call.name}: {problems}. Call it again with arguments matching its inputSchema."
        refused = _result(t.CallToolResult(content=[t.TextContent(type="text", text=text)], is_error=True))
        return ToolCall(name=call.name, agent=agent, arguments=arguments, refused=refused)
    await admit(kernel, ident, call.name)
    if wrapped:
        arguments = arguments[WRAPPED_INPUT]
    meta = (params or {}).get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return ToolCall(name=call.name, agent=agent, arguments=arguments, progress_token=token)


@functools.lru_cache(maxsize=256)
def _validator(schema_text: str) -> Any:
    """The jsonschema validator of a tool's ``inputSchema`` (by its JSON text), or the ``SchemaError`` saying why
    there is none."""
    import jsonschema  # type: ignore[import-untyped]

    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc
    return cls(schema)


def argument_problems(schema: dict[str, Any], arguments: Any) -> str:
    """Why ``arguments`` do not fit the tool's advertised ``inputSchema`` (up to five reasons), empty when they do.

    A schema jsonschema cannot use (the agent declared an invalid one) refuses every call, saying so.
    """
    from jsonschema.exceptions import relevance  # type: ignore[import-untyped]

    validator = _validator(dumps(schema))
    if isinstance(validator, Exception):
        reason = str(getattr(validator, "message", validator))[:200]
        return f"the tool's inputSchema is not a valid JSON Schema ({reason}); its owner must fix it"
    errors = sorted(validator.iter_errors(arguments), key=relevance)
    return "; ".join(f"{'/'.join(str(p) for p in e.absolute_path) or 'arguments'}: {e.message[:300]}"
                     for e in errors[:5])


async def start_call(kernel: "Kernel", ident: "Identity", session_id: str, req_id: Any, call: ToolCall) -> None:
    """Queue the run, as ``POST /rest`` does, under a run id derived from (session, request id).

    No run record is written for a call that ends normally (``/rest`` writes none either; it would cost two
    store writes per call): ``cancel`` writes one when a call is cancelled. With ``REDIS_URL`` the run is
    queued as a recorded run, so the worker executing it watches that record for a stop request.
    """
    spec = runs.spec_from_agent(call.agent, call.arguments)
    run_id = call.run_id = run_id_for(session_id, req_id)
    calls = inflight(kernel)
    if run_id in calls or run_id in runs.local(kernel).channels:
        raise McpError(INVALID_REQUEST, f"Request id {req_id!r} was already used in this session")
    call.owner, call.started_at, call.workspace_id = ident.uid, now_iso(), spec.get("workspaceId")
    calls[run_id] = call
    try:
        runs.channel(kernel, run_id)
        await kernel.queue.submit("agent_run", runs.job_payload(
            ident, spec, run_id=run_id, record=runs.remote(kernel), capture_trace=call.progress_token is not None),
            timeout=runs.job_timeout(kernel))
    except BaseException:
        calls.pop(run_id, None)
        raise


Progress = Callable[[float, str | None], Awaitable[None]]


async def wait_call(kernel: "Kernel", call: ToolCall, *, progress: Progress | None,
                    gone: Callable[[], bool]) -> dict[str, Any] | None:
    """Follow the run to its end: progress while it lasts, the ``CallToolResult`` at the end.

    None when the run was stopped because its caller went away or cancelled the request (no answer is due).
    While it runs, the run id's record is looked at every second: a cancel that reached another process
    leaves a stop request there.
    """
    try:
        return await _wait(kernel, call, progress=progress, gone=gone)
    finally:
        inflight(kernel).pop(call.run_id, None)


async def _wait(kernel: "Kernel", call: ToolCall, *, progress: Progress | None,
                gone: Callable[[], bool]) -> dict[str, Any] | None:
    ch = runs.channel(kernel, call.run_id)
    cursor: Any = None
    step = 0
    started = time.monotonic()
    deadline = started + runs.job_timeout(kernel) + 30
    stopping = False
    last_check = started
    while True:
        events, done, cursor = await ch.read(cursor, PROGRESS_EVERY_S)
        if done is not None:
            break
        if gone():
            await abandon(kernel, call)
            return None
        now = time.monotonic()
        if progress is not None:
            step += 1
            said = next((e.get("message") for e in reversed(events) if e.get("message")), None)
            await progress(step, str(said)[:500] if said else f"{call.name} running ({now - started:.0f} s)")
        if now - last_check >= CANCEL_POLL_S and not stopping:
            last_check = now
            doc = await kernel.store.get(RUNS, call.run_id)
            if doc is not None and doc.get("stopRequested"):
                stopping = True
                await runs.stop_local(kernel, call.run_id)
        if now > deadline:
            done = {"outcome": "error", "result": None, "error": "timeout: the run did not end in time"}
            break
    if done.get("outcome") == "stopped":
        doc = await kernel.store.get(RUNS, call.run_id)
        if doc is not None and doc.get("mcpCancelled"):
            await _complete_cancelled(kernel, call)
            return None
    return call_result(call, done)


def _cancelled_record(call: ToolCall | None, run_id: str, owner: str, error: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "runId": run_id, "agentId": None, "agentName": None, "status": "stopped", "startedAt": now_iso(),
        "completedAt": now_iso(), "inputDict": None, "error": error, OWNER_FIELD: owner, "result": None,
        "schemaWarnings": None, "opsLog": None, "events": [], "stopRequested": True, "mcpCancelled": True,
    }
    if call is not None:
        record.update({"agentId": call.agent.get("_id"), "agentName": call.name, "startedAt": call.started_at,
                       "inputDict": call.arguments})
        if call.workspace_id:
            record["workspaceId"] = call.workspace_id
    return record


async def _complete_cancelled(kernel: "Kernel", call: ToolCall) -> None:
    """The record of a cancelled call, with what the process that ran it knows (agent, input, start)."""
    details = _cancelled_record(call, call.run_id, call.owner, CANCELLED_ERROR)
    keep = ("agentId", "agentName", "startedAt", "inputDict", "workspaceId")
    await kernel.store.update(RUNS, call.run_id, lambda d: None if d is None else {
        **d, **{k: details[k] for k in keep if k in details}, "status": "stopped",
        "completedAt": d.get("completedAt") or now_iso(), "error": d.get("error") or CANCELLED_ERROR})


async def record_stop(kernel: "Kernel", run_id: str, call: ToolCall | None, owner: str, error: str) -> None:
    """Leave the run's record ``stopped`` by its MCP client, with the call's details when this process has them.

    A run that has a record already (a worker's, with ``REDIS_URL``, or a cancel's that came first) gets the stop
    request on it instead; the run's owner only. Shared by ``notifications/cancelled`` and a dropped connection.
    """
    try:
        await kernel.store.put(RUNS, run_id, _cancelled_record(call, run_id, owner, error), rev=None)
    except RevisionConflict:
        await kernel.store.update(RUNS, run_id, lambda d: None if d is None or d.get(OWNER_FIELD) != owner
                                  else {**d, "stopRequested": True, "mcpCancelled": True})


async def abandon(kernel: "Kernel", call: ToolCall) -> None:
    """Stop a call's run because its caller went away (connection closed, or the handler was cancelled): its
    record ends ``stopped`` as a cancelled call's does."""
    await record_stop(kernel, call.run_id, call, call.owner, DROPPED_ERROR)
    await runs.stop_local(kernel, call.run_id)


def call_result(call: ToolCall, done: dict[str, Any]) -> dict[str, Any]:
    """A run's end as a ``CallToolResult``: the agent's error is a result with ``isError`` (the model sees it)."""
    t = sdk()
    if done.get("outcome") != "success":
        message = str(done.get("error") or "unknown error")
        return _result(t.CallToolResult(content=[t.TextContent(type="text", text=f"Error executing agent: {message}")],
                                        is_error=True))
    value = done.get("result")
    text = value if isinstance(value, str) else dumps(value)
    structured = value if isinstance(value, dict) else None
    advertised = output_schema(call.agent.get("outputSchema"))
    if advertised is not None:
        problems = _output_problems(value, advertised)
        if problems:
            return _result(t.CallToolResult(
                content=[t.TextContent(type="text", text="The agent's result does not match its outputSchema: "
                                       + "; ".join(problems) + f". Result: {text[:2000]}")], is_error=True))
    return _result(t.CallToolResult(content=[t.TextContent(type="text", text=text)], structured_content=structured))


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,),
    "object": (dict,),
}


def _output_problems(value: Any, schema: dict[str, Any]) -> list[str]:
    """Why a result would fail the tool's ``outputSchema`` (top-level keys and types), empty when it fits."""
    if not isinstance(value, dict):
        return [f"expected an object, got {type(value).__name__}"]
    problems = [f"missing key {k!r}" for k in schema.get("required") or [] if k not in value]
    for key, prop in (schema.get("properties") or {}).items():
        expected = _PY_TYPES.get(str((prop or {}).get("type")))
        if key in value and expected is not None:
            v = value[key]
            if not isinstance(v, expected) or (isinstance(v, bool) and prop.get("type") in ("integer", "number")):
                problems.append(f"{key!r} should be {prop['type']}, got {type(v).__name__}")
    return problems


async def cancel(kernel: "Kernel", ident: "Identity", session_id: str, params: dict[str, Any] | None) -> None:
    """``notifications/cancelled``: stop the request's run wherever it runs; unknown ids are ignored.

    The cancel leaves a run record (status ``stopped``, ``stopRequested``): the process waiting for the call
    (in-process runs) or the worker running it (``REDIS_URL``) sees the request within a second and stops the
    run. When the call is in flight here, it is stopped at once. The session was checked to be the caller's,
    so the run id derived from it is the caller's too.
    """
    req_id = (params or {}).get("requestId")
    if not isinstance(req_id, (str, int)) or isinstance(req_id, bool):
        return
    run_id = run_id_for(session_id, req_id)
    call = inflight(kernel).get(run_id)
    await record_stop(kernel, run_id, call, ident.uid, CANCELLED_ERROR)
    if call is not None:
        await runs.stop_local(kernel, run_id)


# -- server → client streams (GET) and tools/list_changed ------------------------------------------------
class Streams:
    """The GET streams open in this process, and the watcher that tells them when the tool list changed.

    A deploy or undeploy in this process wakes the watcher at once (``deployments.on_change``); changes made
    by other processes are seen by polling the change markers in the store every ``CHANGE_POLL_S``.
    """

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel
        self.queues: dict[str, asyncio.Queue[dict[str, Any] | None]] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        self.fingerprint = ""
        deployments.on_change(kernel, self.wake.set)

    async def open(self, session_id: str) -> "asyncio.Queue[dict[str, Any] | None]":
        old = self.queues.pop(session_id, None)
        if old is not None:
            old.put_nowait(None)  # one stream per session: a new GET replaces the old one
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.queues[session_id] = queue
        if self.task is None or self.task.done():
            self.fingerprint = (await catalog(self.kernel)).fingerprint
            self.task = self.kernel.spawn(self._watch(), name="mcp-tools-watcher")
        return queue

    def drop(self, session_id: str, queue: "asyncio.Queue[dict[str, Any] | None]") -> None:
        if self.queues.get(session_id) is queue:
            del self.queues[session_id]

    def end(self, session_id: str) -> None:
        queue = self.queues.pop(session_id, None)
        if queue is not None:
            queue.put_nowait(None)

    def close(self) -> None:
        """With the kernel: every open stream ends."""
        for session_id in list(self.queues):
            self.end(session_id)

    async def _watch(self) -> None:
        rounds = 0
        while self.queues:
            try:
                await asyncio.wait_for(self.wake.wait(), CHANGE_POLL_S)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            try:
                cat = await catalog(self.kernel)
                if cat.fingerprint != self.fingerprint:
                    self.fingerprint = cat.fingerprint
                    note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
                    for queue in list(self.queues.values()):
                        queue.put_nowait(note)
                rounds += 1
                if rounds % 300 == 1:
                    await sweep_expired(self.kernel)
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("watching MCP tool changes failed")


def streams(kernel: "Kernel") -> Streams:
    return kernel.component(STREAMS_KEY, lambda: Streams(kernel))
