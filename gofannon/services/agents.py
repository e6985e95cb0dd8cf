"""Agents: CRUD with ownership and revisions (wire contract §1.8, §2.2; DECISIONS.md ownership).

Documents are stored in the wire's key order, so listing is a store read and one JSON encode: no
pydantic round trip per document on the read path.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from gofannon.errors import Conflict, DocumentNotFound, Forbidden, NotFound, RevisionConflict
from gofannon.models.agent import AGENT_FIELDS, AGENT_KEYS, CreateAgentRequest, UpdateAgentRequest
from gofannon.models.deployment import DEPLOYMENTS
from gofannon.services.ownership import (
    DELETE, DEPLOY, EDIT, OWNER_FIELD, PERSONAL_PREFIX, READ, RUN, WORKSPACE_FIELD, authorize, may,
    shared_workspace,
)
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


async def lists_changed(kernel: "Kernel") -> None:
    """Invalidate every process's cached ``GET /agents`` answers after agents were written elsewhere (a
    workspace deleted with its agents)."""
    await _bump(kernel)


def ordered(doc: dict[str, Any]) -> dict[str, Any]:
    """A document in the wire's key order (documents written by other tools may not be)."""
    out = {k: doc.get(k) for k in AGENT_KEYS if k in doc or k in AGENT_FIELDS}
    out.setdefault("validateInput", bool(doc.get("validateInput", False)))
    if doc.get(WORKSPACE_FIELD):
        out[WORKSPACE_FIELD] = doc[WORKSPACE_FIELD]  # only documents of a shared workspace carry one
    return out


def deployment_doc(agent: dict[str, Any]) -> dict[str, Any]:
    """The ``deployments/<friendlyName>`` document of an agent (its workspace travels with it)."""
    doc = {"agentId": agent["_id"], OWNER_FIELD: agent.get(OWNER_FIELD)}
    ws = shared_workspace(agent)
    if ws is not None:
        doc[WORKSPACE_FIELD] = ws
    return doc


def _not_found(agent_id: str) -> DocumentNotFound:
    return DocumentNotFound(AGENTS, agent_id)


async def create_agent(kernel: "Kernel", ident: "Identity", req: CreateAgentRequest, *,
                       workspace_id: str | None = None) -> dict[str, Any]:
    """A new agent of the caller, in ``workspace_id`` (the active workspace, already checked) when that is a
    shared one; in a personal workspace the document carries no ``workspaceId``, as before workspaces."""
    body = req.model_dump(by_alias=True)
    now = now_iso()
    agent_id = str(uuid.uuid4())
    doc = {k: body.get(k) for k in AGENT_FIELDS}
    doc.update({"_id": agent_id, "_rev": None, "createdAt": now, "updatedAt": now, OWNER_FIELD: ident.uid,
                "validateInput": body.get("validateInput", False)})
    if workspace_id and workspace_id != PERSONAL_PREFIX + ident.uid:
        if workspace_id.startswith(PERSONAL_PREFIX):
            raise Forbidden("Agents are made in your own personal workspace or in a shared one")
        doc[WORKSPACE_FIELD] = workspace_id
    doc["_rev"] = await kernel.store.put(AGENTS, agent_id, doc, rev=None)
    await _bump(kernel)
    return doc


def _list_key(ident: "Identity", workspace_id: str | None) -> str:
    """What a list shows: ``*`` every agent (a site admin in their own workspace, as before workspaces),
    ``u|<uid>`` a personal workspace, ``w|<id>`` a shared one."""
    own = PERSONAL_PREFIX + ident.uid
    workspace_id = workspace_id or own
    if workspace_id == own:
        return "*" if ident.is_site_admin else f"u|{ident.uid}"
    if workspace_id.startswith(PERSONAL_PREFIX):
        return f"u|{workspace_id[len(PERSONAL_PREFIX):]}"
    return f"w|{workspace_id}"


async def _list(kernel: "Kernel", key: str) -> list[dict[str, Any]]:
    if key == "*":
        return await kernel.store.list(AGENTS)  # type: ignore[no-any-return]
    kind, _, value = key.partition("|")
    if kind == "w":
        return await kernel.store.find(AGENTS, {WORKSPACE_FIELD: value})  # type: ignore[no-any-return]
    return [d for d in await kernel.store.find(AGENTS, {OWNER_FIELD: value}) if shared_workspace(d) is None]


async def list_agents(kernel: "Kernel", ident: "Identity", workspace_id: str | None = None) -> list[dict[str, Any]]:
    """The agents of ``workspace_id`` (the active workspace, already checked; None = the caller's personal)."""
    return await _list(kernel, _list_key(ident, workspace_id))


async def list_agents_json(kernel: "Kernel", ident: "Identity", workspace_id: str | None = None) -> bytes:
    """``GET /agents`` as encoded JSON: one small store read validates the cached answer."""
    from gofannon.jsontext import dumps

    meta = await kernel.store.get(META, LIST_VERSION)
    version = meta["_rev"] if meta is not None else "-"
    key = _list_key(ident, workspace_id)
    cache = kernel.component(LIST_CACHE_KEY, ListCache)
    body = cache.get(key, version)
    if body is None:
        body = dumps([ordered(d) for d in await _list(kernel, key)]).encode()
        cache.put(key, version, body)
    return body


async def get_agent(kernel: "Kernel", ident: "Identity", agent_id: str, verb: str = READ) -> dict[str, Any]:
    """The agent, if ``ident`` may ``verb`` it (404 outside their reach, 403 a member's limits)."""
    doc = await kernel.store.get(AGENTS, agent_id)
    if doc is None:
        raise _not_found(agent_id)
    await authorize(kernel, ident, doc, verb, not_found=_not_found(agent_id))
    return doc  # type: ignore[no-any-return]


async def update_agent(kernel: "Kernel", ident: "Identity", agent_id: str, req: UpdateAgentRequest) -> dict[str, Any]:
    """Shallow-merge the body's keys onto the stored agent.

    With ``_rev`` the write succeeds only on that revision (409 otherwise); without it the merge is
    applied to whatever is stored, by the store's compare-and-set loop, so no concurrent edit is lost.
    A changed ``friendlyName`` moves a live deployment with it (§12.28).
    """
    changes = req.changes()
    before = await get_agent(kernel, ident, agent_id, EDIT)
    new_name = changes.get("friendlyName", before.get("friendlyName"))
    moving = "friendlyName" in changes and new_name != before.get("friendlyName")
    if moving and shared_workspace(before) is not None and await _deployed(kernel, before):
        # Renaming a deployed agent moves (or, to no name, withdraws) its deployment: an admin's act.
        await authorize(kernel, ident, before, DEPLOY, not_found=_not_found(agent_id))
    if moving and new_name:
        taken = await kernel.store.get(DEPLOYMENTS, new_name)
        if taken is not None and taken.get("agentId") != agent_id and await _deployed(kernel, before):
            raise Conflict(f"A deployment with the name '{new_name}' already exists for a different agent.")

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        if current is None or shared_workspace(current) != shared_workspace(before) \
                or current.get(OWNER_FIELD) != before.get(OWNER_FIELD):
            raise _not_found(agent_id)  # moved or replaced meanwhile: what was authorised is gone
        if req.rev is not None and req.rev != current.get("_rev"):
            raise RevisionConflict(AGENTS, agent_id)
        merged = ordered(current)
        merged.update(changes)
        merged["_id"] = agent_id
        merged["createdAt"] = current.get("createdAt")
        merged["updatedAt"] = now_iso()
        merged[OWNER_FIELD] = current.get(OWNER_FIELD)
        if current.get(WORKSPACE_FIELD):
            merged[WORKSPACE_FIELD] = current[WORKSPACE_FIELD]
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
            await kernel.store.put(DEPLOYMENTS, new, deployment_doc(agent), rev=None)
        except RevisionConflict:
            pass  # taken meanwhile: the agent ends up undeployed rather than answering under a stale name


async def delete_agent(kernel: "Kernel", ident: "Identity", agent_id: str) -> None:
    doc = await kernel.store.get(AGENTS, agent_id)
    missing = NotFound(f"Document '{agent_id}' not found for deletion.")
    if doc is None:
        raise missing
    await authorize(kernel, ident, doc, DELETE, not_found=missing)
    deps = await kernel.store.find(DEPLOYMENTS, {"agentId": agent_id})
    if deps and shared_workspace(doc) is not None:
        await authorize(kernel, ident, doc, DEPLOY, not_found=missing)  # deleting it undeploys it
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
        elif not await may(kernel, ident, doc, RUN) and not (
                shared_workspace(doc) is None and await _deployed(kernel, doc)):
            return None  # a deployment in a shared workspace is for its members only
        out.append(doc)
    return out


async def move_to(kernel: "Kernel", doc: dict[str, Any], target: str) -> tuple[dict[str, Any], bool]:
    """Put an agent (already authorised, see ``workspaces.move_agent``) in workspace ``target``; its
    deployment, if any, carries the new workspace. Returns the moved agent and whether a deployment moved."""
    agent_id = doc["_id"]
    owner_personal = PERSONAL_PREFIX + str(doc.get(OWNER_FIELD))

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        if current is None or shared_workspace(current) != shared_workspace(doc):
            raise _not_found(agent_id)
        current.pop(WORKSPACE_FIELD, None)
        if target != owner_personal:
            current[WORKSPACE_FIELD] = target
        current["updatedAt"] = now_iso()
        return current

    stored = await kernel.store.update(AGENTS, agent_id, apply)
    await _bump(kernel)
    if not await _deployed(kernel, stored):
        return ordered(stored), False
    await kernel.store.put(DEPLOYMENTS, stored["friendlyName"], deployment_doc(stored))
    return ordered(stored), True
