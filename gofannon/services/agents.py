"""Agents: CRUD with ownership and revisions (wire contract §1.8, §2.2; DECISIONS.md ownership).

Documents are stored in the wire's key order, so listing is a store read and one JSON encode: no
pydantic round trip per document on the read path.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from gofannon.errors import Conflict, DocumentNotFound, NotFound, RevisionConflict
from gofannon.models.agent import AGENT_FIELDS, AGENT_KEYS, CreateAgentRequest, UpdateAgentRequest
from gofannon.models.deployment import DEPLOYMENTS
from gofannon.services.ownership import OWNER_FIELD, owns, visible_filter
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

AGENTS = "agents"
#: One document whose revision changes on every agent write, in any process sharing the store: the
#: validator of the per-process cache of encoded ``GET /agents`` answers.
META = "agents_meta"
LIST_VERSION = "list-version"
LIST_CACHE_KEY = "agents.list_cache"


class ListCache:
    """Encoded ``GET /agents`` bodies per owner (``*`` = a site admin's view), bounded LRU."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def get(self, key: str, version: str) -> bytes | None:
        hit = self.entries.get(key)
        if hit is None or hit[0] != version:
            return None
        self.entries.move_to_end(key)
        return hit[1]

    def put(self, key: str, version: str, body: bytes) -> None:
        self.entries[key] = (version, body)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


async def _bump(kernel: "Kernel") -> None:
    await kernel.store.put(META, LIST_VERSION, {"changedAt": now_iso()})


def ordered(doc: dict[str, Any]) -> dict[str, Any]:
    """A document in the wire's key order (documents written by other tools may not be)."""
    out = {k: doc.get(k) for k in AGENT_KEYS if k in doc or k in AGENT_FIELDS}
    out.setdefault("validateInput", bool(doc.get("validateInput", False)))
    return out


def _not_found(agent_id: str) -> DocumentNotFound:
    return DocumentNotFound(AGENTS, agent_id)


async def create_agent(kernel: "Kernel", ident: "Identity", req: CreateAgentRequest) -> dict[str, Any]:
    body = req.model_dump(by_alias=True)
    now = now_iso()
    agent_id = str(uuid.uuid4())
    doc = {k: body.get(k) for k in AGENT_FIELDS}
    doc.update({"_id": agent_id, "_rev": None, "createdAt": now, "updatedAt": now, OWNER_FIELD: ident.uid,
                "validateInput": body.get("validateInput", False)})
    doc["_rev"] = await kernel.store.put(AGENTS, agent_id, doc, rev=None)
    await _bump(kernel)
    return doc


async def list_agents(kernel: "Kernel", ident: "Identity") -> list[dict[str, Any]]:
    return await kernel.store.find(AGENTS, visible_filter(ident))  # type: ignore[no-any-return]


async def list_agents_json(kernel: "Kernel", ident: "Identity") -> bytes:
    """``GET /agents`` as encoded JSON: one small store read validates the cached answer."""
    from gofannon.web.common import dumps

    meta = await kernel.store.get(META, LIST_VERSION)
    version = meta["_rev"] if meta is not None else "-"
    key = "*" if ident.is_site_admin else ident.uid
    cache = kernel.component(LIST_CACHE_KEY, ListCache)
    body = cache.get(key, version)
    if body is None:
        body = dumps([ordered(d) for d in await list_agents(kernel, ident)]).encode()
        cache.put(key, version, body)
    return body


async def get_agent(kernel: "Kernel", ident: "Identity", agent_id: str) -> dict[str, Any]:
    doc = await kernel.store.get(AGENTS, agent_id)
    if doc is None or not owns(ident, doc):
        raise _not_found(agent_id)
    return doc  # type: ignore[no-any-return]


async def update_agent(kernel: "Kernel", ident: "Identity", agent_id: str, req: UpdateAgentRequest) -> dict[str, Any]:
    """Shallow-merge the body's keys onto the stored agent.

    With ``_rev`` the write succeeds only on that revision (409 otherwise); without it the merge is
    applied to whatever is stored, by the store's compare-and-set loop, so no concurrent edit is lost.
    A changed ``friendlyName`` moves a live deployment with it (§12.28).
    """
    changes = req.changes()
    before = await get_agent(kernel, ident, agent_id)
    new_name = changes.get("friendlyName", before.get("friendlyName"))
    moving = "friendlyName" in changes and new_name != before.get("friendlyName")
    if moving and new_name:
        taken = await kernel.store.get(DEPLOYMENTS, new_name)
        if taken is not None and taken.get("agentId") != agent_id and await _deployed(kernel, before):
            raise Conflict(f"A deployment with the name '{new_name}' already exists for a different agent.")

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        if current is None or not owns(ident, current):
            raise _not_found(agent_id)
        if req.rev is not None and req.rev != current.get("_rev"):
            raise RevisionConflict(AGENTS, agent_id)
        merged = ordered(current)
        merged.update(changes)
        merged["_id"] = agent_id
        merged["createdAt"] = current.get("createdAt")
        merged["updatedAt"] = now_iso()
        merged[OWNER_FIELD] = current.get(OWNER_FIELD)
        return merged

    stored = await kernel.store.update(AGENTS, agent_id, apply)
    await _bump(kernel)
    if moving:
        await _move_deployment(kernel, stored, before.get("friendlyName"), new_name)
    return ordered(stored)


async def _deployed(kernel: "Kernel", agent: dict[str, Any]) -> bool:
    name = agent.get("friendlyName")
    if not name:
        return False
    dep = await kernel.store.get(DEPLOYMENTS, name)
    return dep is not None and dep.get("agentId") == agent["_id"]


async def _move_deployment(kernel: "Kernel", agent: dict[str, Any], old: str | None, new: str | None) -> None:
    """After a rename: the old public name stops answering; a deployed agent stays deployed under the new one."""
    if not old:
        return
    dep = await kernel.store.get(DEPLOYMENTS, old)
    if dep is None or dep.get("agentId") != agent["_id"]:
        return
    await kernel.store.delete(DEPLOYMENTS, old)
    if new:
        try:
            await kernel.store.put(DEPLOYMENTS, new, {"agentId": agent["_id"], OWNER_FIELD: agent.get(OWNER_FIELD)},
                                   rev=None)
        except RevisionConflict:
            pass  # taken meanwhile: the agent ends up undeployed rather than answering under a stale name


async def delete_agent(kernel: "Kernel", ident: "Identity", agent_id: str) -> None:
    doc = await kernel.store.get(AGENTS, agent_id)
    if doc is None or not owns(ident, doc):
        raise NotFound(f"Document '{agent_id}' not found for deletion.")
    deps = await kernel.store.find(DEPLOYMENTS, {"agentId": agent_id})
    await kernel.store.delete_many(DEPLOYMENTS, [d["_id"] for d in deps])
    await kernel.store.delete(AGENTS, agent_id)
    await _bump(kernel)


async def load_usable(kernel: "Kernel", ident: "Identity", agent_ids: list[str], *,
                      on_behalf_of: str | None = None) -> list[dict[str, Any]] | None:
    """The agents a run may call: the caller's own, published (deployed) ones, and -- for a saved agent's
    own ``gofannonAgents`` -- those of that agent's owner (``on_behalf_of``), who chose them when
    publishing it. None if any is missing or not usable."""
    if not agent_ids:
        return []
    found = await kernel.store.get_many(AGENTS, agent_ids)
    out: list[dict[str, Any]] = []
    for agent_id in agent_ids:
        doc = found.get(agent_id)
        if doc is None:
            return None
        if on_behalf_of is not None and doc.get(OWNER_FIELD) == on_behalf_of:
            pass
        elif not owns(ident, doc) and not await _deployed(kernel, doc):
            return None
        out.append(doc)
    return out
