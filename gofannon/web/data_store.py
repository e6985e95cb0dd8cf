"""Routes: the data-store viewer (wire contract §11), always scoped to the caller's own records.

The viewer reads without touching access counters (only agents' reads count as accesses). Namespaces and
keys may contain ``/``: the UI sends them percent-encoded and the router decodes them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gofannon.errors import Forbidden, NotFound
from gofannon.models import WireModel
from gofannon.services import data_store as ds
from gofannon.web.workspace import active_workspace
from gofannon.web.common import (
    api_doc,
    identity,
    json_response,
    kernel_of,
    no_content,
    parse_body,
)

routes = web.RouteTableDef()

_BASE = "/data-store/namespaces"


class PutRecordRequest(WireModel):
    value: Any
    metadata: dict[str, Any] | None = None


def _ns(request: web.Request) -> str:
    return ds.check_namespace(request.match_info["ns"])


def _key(request: web.Request) -> str:
    return ds.check_key(request.match_info["key"])


def _not_found(ns: str, key: str) -> NotFound:
    return NotFound(f"Record '{key}' not found in '{ns}'")


async def _owner(request: web.Request, *, admin: bool = False) -> str:
    """Whose records: the caller's own, or in a shared active workspace the workspace's (shared by its
    members; clearing a whole namespace there is for its admins). docs/workspaces.md."""
    ident = identity(request)
    workspace_id, role = await active_workspace(request)
    if workspace_id.startswith("personal:"):
        return ident.uid
    if admin and role != "admin":
        raise Forbidden("Only an admin of this workspace may clear a namespace")
    return workspace_id


@routes.get(_BASE)
@api_doc(summary="The caller's data-store namespaces with record counts, sizes and agents", tags=["data-store"])
async def list_namespaces(request: web.Request) -> web.Response:
    owner = await _owner(request)
    return json_response(await ds.all_namespace_stats(kernel_of(request), owner))


@routes.get(_BASE + "/{ns}")
@api_doc(summary="Stats of one namespace (zeros when it is empty)", tags=["data-store"])
async def namespace_stats(request: web.Request) -> web.Response:
    owner = await _owner(request)
    return json_response(await ds.namespace_stats(kernel_of(request), owner, _ns(request)))


@routes.delete(_BASE + "/{ns}")
@api_doc(summary="Delete every record of a namespace", tags=["data-store"])
async def clear_namespace(request: web.Request) -> web.Response:
    owner = await _owner(request, admin=True)
    ns = _ns(request)
    count = await ds.clear(kernel_of(request), owner, ns)
    return json_response({"namespace": ns, "deletedCount": count})


@routes.get(_BASE + "/{ns}/records")
@api_doc(summary="Every record of a namespace, sorted by key", tags=["data-store"])
async def list_records(request: web.Request) -> web.Response:
    owner = await _owner(request)
    return json_response(await ds.list_records(kernel_of(request), owner, _ns(request)))


@routes.get(_BASE + "/{ns}/records/{key:[\\s\\S]+}")
@api_doc(summary="One record", tags=["data-store"])
async def get_record(request: web.Request) -> web.Response:
    owner = await _owner(request)
    ns, key = _ns(request), _key(request)
    doc = await ds.get_record(kernel_of(request), owner, ns, key)
    if doc is None:
        raise _not_found(ns, key)
    return json_response(ds.public_record(doc))


@routes.put(_BASE + "/{ns}/records/{key:[\\s\\S]+}")
@api_doc(summary="Create or replace a record's value (metadata merges)", body=PutRecordRequest, tags=["data-store"])
async def put_record(request: web.Request) -> web.Response:
    owner = await _owner(request)
    ns, key = _ns(request), _key(request)
    body = await parse_body(request, PutRecordRequest)
    doc = await ds.set(kernel_of(request), owner, ns, key, body.value, body.metadata)
    return json_response(ds.public_record(doc))


@routes.delete(_BASE + "/{ns}/records/{key:[\\s\\S]+}")
@api_doc(summary="Delete one record", status=204, tags=["data-store"])
async def delete_record(request: web.Request) -> web.Response:
    owner = await _owner(request)
    ns, key = _ns(request), _key(request)
    if not await ds.delete(kernel_of(request), owner, ns, key):
        raise _not_found(ns, key)
    return no_content()
