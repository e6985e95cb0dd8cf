"""Deployments: publishing an agent under its ``friendlyName`` and running it through ``/rest``.

Deploying is publishing (DECISIONS.md): only the owner deploys or undeploys, but any authenticated user
may call a deployed agent, billed to the caller. An agent of a shared workspace (docs/workspaces.md) is
deployed and undeployed by the workspace's admins and may be called, listed and seen only by its members
(and tokens bound to it); it does not appear in the public lists. ``deployments/<friendlyName>`` is created with
"create only" semantics, so two agents can never hold the same public name.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Callable

from gofannon.errors import (
    BadRequest, Conflict, GatewayTimeout, GofannonError, NotFound, RevisionConflict, Unprocessable,
)
from gofannon.models.agent import FRIENDLY_NAME_PATTERN, FRIENDLY_NAME_RE
from gofannon.models.deployment import DEPLOYMENTS, deploy_answer, deployed_api
from gofannon.services import runs
from gofannon.services.agents import AGENTS, deployment_doc, get_agent
from gofannon.services.ownership import DEPLOY, RUN, authorize, shared_workspace
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

NO_DEPLOYMENT = "No deployed agent found with that name."
_EXC_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*: ")
#: A document whose revision changes on every deploy and undeploy, in any process sharing the store: what
#: the MCP server polls to tell its connected clients that the tool list changed.
CHANGES = "deployments_meta"
CHANGE_MARKER = "version"
_LISTENERS_KEY = "deployments.listeners"


def _listeners(kernel: "Kernel") -> list[Callable[[], None]]:
    return kernel.component(_LISTENERS_KEY, list)


def on_change(kernel: "Kernel", listener: Callable[[], None]) -> None:
    """Call ``listener`` (in this process, synchronously) after each deploy or undeploy."""
    _listeners(kernel).append(listener)


async def _changed(kernel: "Kernel") -> None:
    await kernel.store.put(CHANGES, CHANGE_MARKER, {"changedAt": now_iso()})
    if kernel.has_component(_LISTENERS_KEY):
        for listener in _listeners(kernel):
            listener()


async def changed(kernel: "Kernel") -> None:
    """Tell the listeners (the MCP server's tool list) after deployments were changed elsewhere (a workspace
    deleted with its agents, an agent moved)."""
    await _changed(kernel)


async def deploy(kernel: "Kernel", ident: "Identity", agent_id: str) -> dict[str, str]:
    agent = await get_agent(kernel, ident, agent_id, DEPLOY)
    name = agent.get("friendlyName")
    if not name:
        raise BadRequest("Agent must have a friendly_name to be deployed.")
    if not FRIENDLY_NAME_RE.match(name):
        raise Unprocessable(f"friendlyName '{name}' must match {FRIENDLY_NAME_PATTERN} to be deployed.")
    taken_message = f"A deployment with the name '{name}' already exists for a different agent."
    existing = await kernel.store.get(DEPLOYMENTS, name)
    if existing is not None:
        if existing.get("agentId") == agent_id:
            return deploy_answer(name, already=True)
        if await kernel.store.get(AGENTS, existing.get("agentId") or "") is not None:
            raise Conflict(taken_message)
        await kernel.store.delete(DEPLOYMENTS, name)  # an orphan (its agent is gone) frees the name
    try:
        await kernel.store.put(DEPLOYMENTS, name, deployment_doc(agent), rev=None)
    except RevisionConflict:
        current = await kernel.store.get(DEPLOYMENTS, name)
        if current is not None and current.get("agentId") == agent_id:
            return deploy_answer(name, already=True)
        raise Conflict(taken_message) from None
    await _changed(kernel)
    return deploy_answer(name, already=False)


async def undeploy(kernel: "Kernel", ident: "Identity", agent_id: str) -> None:
    await get_agent(kernel, ident, agent_id, DEPLOY)  # 404 for unknown and for another user's agent alike
    deps = await kernel.store.find(DEPLOYMENTS, {"agentId": agent_id})
    await kernel.store.delete_many(DEPLOYMENTS, [d["_id"] for d in deps])
    if deps:
        await _changed(kernel)


async def status(kernel: "Kernel", ident: "Identity", agent_id: str) -> dict[str, Any]:
    agent = await get_agent(kernel, ident, agent_id)
    name = agent.get("friendlyName")
    if name:
        dep = await kernel.store.get(DEPLOYMENTS, name)
        if dep is not None and dep.get("agentId") == agent_id:
            return {"is_deployed": True, "friendly_name": name}
    return {"is_deployed": False}


async def _resolved(kernel: "Kernel", workspace_id: "str | None | Collection[str]" = None
                    ) -> list[tuple[str, dict[str, Any]]]:
    """Every live public deployment (of a personal workspace) with its agent, plus those of the shared
    workspace ``workspace_id`` when given (or of each of several); orphans are removed on the way."""
    shown: Collection[str | None] = (None, workspace_id) if workspace_id is None or isinstance(workspace_id, str) \
        else {None, *workspace_id}
    deps = await kernel.store.list(DEPLOYMENTS)
    agents = await kernel.store.get_many(AGENTS, list({d.get("agentId") or "" for d in deps}))
    out: list[tuple[str, dict[str, Any]]] = []
    orphans: list[str] = []
    for dep in deps:
        agent = agents.get(dep.get("agentId") or "")
        if agent is None:
            orphans.append(dep["_id"])
        elif agent.get("friendlyName") == dep["_id"] and shared_workspace(agent) in shown:
            out.append((dep["_id"], agent))
    if orphans:
        await kernel.store.delete_many(DEPLOYMENTS, orphans)
    return out


async def deployed_agents(kernel: "Kernel", workspace_id: "str | None | Collection[str]" = None
                          ) -> list[tuple[str, dict[str, Any]]]:
    """Every live public deployment (and those of the shared workspace ``workspace_id``, or of each of several,
    which the caller must have checked) as ``(friendlyName, agent document)``."""
    return await _resolved(kernel, workspace_id)


async def list_deployments(kernel: "Kernel", workspace_id: str | None = None) -> list[dict[str, Any]]:
    """``GET /deployments``: the public ones, and those of the active workspace when it is a shared one."""
    return [deployed_api(name, agent) for name, agent in await _resolved(kernel, workspace_id)]


async def gofannon_provider_models(kernel: "Kernel") -> dict[str, Any]:
    """The synthetic ``gofannon`` provider of the catalog: ``{"models": {<friendlyName>: {...}}}``
    (empty ``models`` when nothing is deployed)."""
    models: dict[str, Any] = {}
    for name, agent in await _resolved(kernel):
        params = {
            key: {"type": str(kind), "description": key, "default": ""}
            for key, kind in (agent.get("inputSchema") or {}).items()
        }
        models[name] = {"id": agent["_id"], "description": agent.get("description") or "", "parameters": params}
    return {"models": models}


async def load_deployed(kernel: "Kernel", friendly_name: str, ident: "Identity | None" = None) -> dict[str, Any]:
    """The deployed agent ``ident`` may call: anyone signed in for a public one; for one of a shared workspace
    its members and tokens bound to it — only when ``ident`` is given, so a caller that does not pass the
    identity never reaches a shared workspace's agents. Everybody else gets the same 404 as an unknown name."""
    dep = await kernel.store.get(DEPLOYMENTS, friendly_name)
    if dep is None:
        raise NotFound(NO_DEPLOYMENT)
    agent = await kernel.store.get(AGENTS, dep.get("agentId") or "")
    if agent is None or agent.get("friendlyName") != friendly_name:
        raise NotFound(NO_DEPLOYMENT)
    if shared_workspace(agent) is not None:
        if ident is None:
            raise NotFound(NO_DEPLOYMENT)
        await authorize(kernel, ident, agent, RUN, not_found=NotFound(NO_DEPLOYMENT))
    return agent  # type: ignore[no-any-return]


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "float": (int, float), "boolean": (bool,), "list": (list,),
}


def check_input(agent: dict[str, Any], input_dict: Any) -> None:
    """Validation against ``inputSchema`` for agents that opt in (``validateInput: true``): 422 on mismatch."""
    schema = agent.get("inputSchema") or {}
    if not agent.get("validateInput") or not schema:
        return
    errors: list[dict[str, Any]] = []
    if not isinstance(input_dict, dict):
        raise Unprocessable([{"type": "dict_type", "loc": ["body"], "msg": "Input should be a valid dictionary",
                              "input": input_dict}])
    for key, declared in schema.items():
        if key not in input_dict:
            errors.append({"type": "missing", "loc": ["body", key], "msg": "Field required", "input": input_dict})
            continue
        expected = _TYPES.get(str(declared).lower())
        value = input_dict[key]
        if expected is None:
            continue
        wrong = not isinstance(value, expected) or (isinstance(value, bool) and str(declared).lower() == "integer")
        if wrong:
            errors.append({"type": f"{str(declared).lower()}_type", "loc": ["body", key],
                           "msg": f"Input should be of type {declared}", "input": value})
    if errors:
        raise Unprocessable(errors)


async def run_deployed_agent(kernel: "Kernel", ident: "Identity", friendly_name: str, input_dict: Any, *,
                             llm_settings: dict[str, Any] | None = None) -> Any:
    """Run a deployed agent as ``ident`` (billed to the caller) and return its raw result.

    Errors: 404 unknown name; 402 (and other HTTP errors the platform raised inside) keep their status;
    the wall-clock limit is a 504; other limits and the agent's own failures are 500 ``Error executing
    agent: ...``.
    """
    agent = await load_deployed(kernel, friendly_name, ident)
    return await run_agent(kernel, ident, agent, input_dict, llm_settings=llm_settings)


async def run_agent(kernel: "Kernel", ident: "Identity", agent: dict[str, Any], input_dict: Any, *,
                    llm_settings: Any = None, record: bool = False) -> Any:
    """``run_deployed_agent`` for an agent document already loaded; ``record`` keeps a run record."""
    check_input(agent, input_dict)
    spec = runs.spec_from_agent(agent, input_dict)
    if llm_settings is not None:
        dump = getattr(llm_settings, "model_dump", None)
        spec["llmSettings"] = dump(by_alias=True) if dump is not None else dict(llm_settings)
    outcome = await runs.run_now(kernel, ident, spec, capture_trace=record, record=record)
    if outcome["outcome"] == "success":
        return outcome["result"]
    http_error = outcome.get("httpError")
    if http_error and 400 <= int(http_error["status"]) < 500:
        err = GofannonError(http_error["detail"])
        err.status = http_error["status"]
        raise err
    limit = outcome.get("limit")
    message = str(outcome.get("error") or "unknown error")
    if limit and limit not in message:
        message = f"{message} ({limit} limit exceeded)"
    elif not limit:
        message = _EXC_PREFIX.sub("", message, count=1)  # the reference shows str(exc) alone
    if limit == "timeout":
        raise GatewayTimeout(f"Error executing agent: {message}")
    raise GofannonError(f"Error executing agent: {message}")
