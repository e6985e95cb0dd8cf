"""Chat tickets: ``POST /chat`` persists a ``pending`` ticket and queues the ``chat`` job, which marks it
``processing`` and then ``completed`` or ``failed`` (wire contract §3.1, DECISIONS "Chat tickets").

A ticket never stays ``processing`` forever: the process running it renews ``heartbeat_at`` every
third of ``GOFANNON_TICKET_LEASE_S``; the sweeper of every running kernel fails tickets whose heartbeat
is older than the lease (the worker died), fails tickets no worker picked up within
``GOFANNON_TICKET_PENDING_S``, and deletes tickets older than ``GOFANNON_TICKET_RETENTION_HOURS``. State
changes go through ``store.update`` (compare-and-set), so a late worker and the sweeper never both win.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from gofannon.errors import GofannonError, NotFound
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel
    from gofannon.models.chat import ChatRequest

log = logging.getLogger("gofannon.tickets")

TICKETS = "tickets"
TERMINAL = ("completed", "failed")
#: Parameters that, in a gofannon (deployed agent) chat, set the LLM settings of the agent's calls.
_LLM_SETTING_KEYS = {"max_tokens": "maxTokens", "maxTokens": "maxTokens", "temperature": "temperature",
                     "reasoning_effort": "reasoningEffort", "reasoningEffort": "reasoningEffort"}


def _ago(seconds: float) -> str:
    moment = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="microseconds")


def ident_payload(ident: "Identity") -> dict[str, Any]:
    """The caller, as a JSON payload a worker process can rebuild; a scoped token's scope (its id, ``models``,
    ``maxSpend``) travels with it, so the worker's model call is checked and reserved against that token."""
    return {"uid": ident.uid, "provider_type": ident.provider_type, "email": ident.email,
            "display_name": ident.display_name, "is_site_admin": ident.is_site_admin,
            "auth_mode": ident.auth_mode, "token": ident.token}


def ident_from(payload: dict[str, Any]) -> "Identity":
    from gofannon.auth import Identity

    token = payload.get("token")
    return Identity(uid=payload["uid"], provider_type=payload.get("provider_type") or "unknown",
                    email=payload.get("email"), display_name=payload.get("display_name"),
                    is_site_admin=bool(payload.get("is_site_admin")), auth_mode=payload.get("auth_mode") or "session",
                    token=dict(token) if isinstance(token, dict) else None)


def chat_model_id(request: "ChatRequest | dict[str, Any]") -> str:
    """The model id a chat uses, as a token's ``models`` names it: ``agent/<name>`` for the ``gofannon``
    provider (a deployed agent), else ``provider/model``."""
    if isinstance(request, dict):
        provider, model = request.get("provider") or "openai", request.get("model") or ""
    else:
        provider, model = request.provider, request.model
    return f"agent/{model}" if provider == "gofannon" else f"{provider}/{model}"


# -- API side ---------------------------------------------------------------------------------------
async def new_ticket(kernel: "Kernel", ident: "Identity", request: "ChatRequest", *,
                     workspace_id: str | None = None) -> dict[str, Any]:
    """Persist a ``pending`` ticket (before anything answers, so GET right after POST finds it)."""
    ticket_id = str(uuid.uuid4())
    now = now_iso()
    doc = {
        "ownerId": ident.uid, "status": "pending", "created_at": now, "updated_at": now, "completed_at": None,
        "request": request.model_dump(by_alias=True), "result": None, "error": None,
    }
    if workspace_id is not None:
        doc["workspaceId"] = workspace_id
    await kernel.store.put(TICKETS, ticket_id, doc, rev=None)
    doc["_id"] = ticket_id
    return doc


async def submit_chat(kernel: "Kernel", ident: "Identity", request: "ChatRequest", *,
                      workspace_id: str | None = None) -> dict[str, Any]:
    """Persist the ``pending`` ticket, then queue it; returns the stored ticket. A chat made in a shared
    workspace (``workspace_id``) is charged to it too. 403 (no ticket) when the caller's token may not use the
    chat's model."""
    from gofannon.services import scopes

    scopes.check_model(ident, chat_model_id(request))
    doc = await new_ticket(kernel, ident, request, workspace_id=workspace_id)
    ticket_id = doc["_id"]
    try:
        await kernel.queue.submit("chat", {"ticket_id": ticket_id, "ident": ident_payload(ident)}, job_id=ticket_id,
                                  timeout=kernel.settings.llm_timeout_seconds + kernel.settings.sandbox_timeout_s + 120)
    except Exception as exc:  # noqa: BLE001 - the ticket must not stay pending because the queue refused
        log.exception("queueing chat ticket %s failed", ticket_id)
        await finish(kernel, ticket_id, error=f"503: Could not queue the chat request: {exc}")
        stored = await kernel.store.get(TICKETS, ticket_id)
        return stored or doc
    return doc


async def get_ticket(kernel: "Kernel", ident: "Identity", ticket_id: str) -> dict[str, Any]:
    from gofannon.services.ownership import load_owned

    return await load_owned(kernel, ident, TICKETS, ticket_id)


# -- state changes ----------------------------------------------------------------------------------
async def claim(kernel: "Kernel", ticket_id: str, worker: str) -> dict[str, Any] | None:
    """pending → processing; None when the ticket is gone or already taken/finished."""
    claimed: dict[str, Any] = {}

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        claimed.clear()
        if doc is None or doc.get("status") != "pending":
            return None
        now = now_iso()
        doc.update(status="processing", updated_at=now, heartbeat_at=now, worker=worker)
        claimed.update(doc)
        return doc

    await kernel.store.update(TICKETS, ticket_id, change)
    return copy.deepcopy(claimed) or None


async def heartbeat(kernel: "Kernel", ticket_id: str, worker: str) -> bool:
    """Renew the lease; False when the ticket is no longer ours (swept or finished)."""
    alive = False

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal alive
        alive = doc is not None and doc.get("status") == "processing" and doc.get("worker") == worker
        if doc is None or not alive:
            return None
        doc["heartbeat_at"] = now_iso()
        return doc

    await kernel.store.update(TICKETS, ticket_id, change)
    return alive


async def finish(kernel: "Kernel", ticket_id: str, *, result: dict[str, Any] | None = None,
                 error: str | None = None, only_if: tuple[str, ...] = ("pending", "processing"),
                 worker: str | None = None) -> bool:
    """Mark a ticket completed (``result``) or failed (``error``); False when it had already ended."""
    done = False

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal done
        done = False
        if doc is None or doc.get("status") not in only_if:
            return None
        if worker is not None and doc.get("status") == "processing" and doc.get("worker") != worker:
            return None
        now = now_iso()
        doc.update(status="failed" if error is not None else "completed", updated_at=now, completed_at=now,
                   result=result if error is None else None, error=error)
        doc.pop("heartbeat_at", None)
        done = True
        return doc

    await kernel.store.update(TICKETS, ticket_id, change)
    return done


# -- the job ----------------------------------------------------------------------------------------
def error_text(exc: BaseException) -> str:
    """Our errors as ``"<status>: <detail>"`` (as the reference's HTTPExceptions read); others as text."""
    if isinstance(exc, GofannonError):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        return f"{exc.status}: {detail}"
    return str(exc) or type(exc).__name__


async def _run_llm(kernel: "Kernel", ident: "Identity", req: dict[str, Any], *,
                   workspace_id: str | None = None) -> dict[str, Any]:
    from gofannon.llm import catalog as catalog_mod
    from gofannon.llm.service import call_llm
    from gofannon.services import scopes

    provider, model = req.get("provider") or "openai", req.get("model") or ""
    tools = None
    wanted = req.get("builtInTools") or []
    if wanted:
        config = catalog_mod.active().model(provider, model) or {}
        tools = [t["tool_config"] for t in config.get("built_in_tools") or []
                 if isinstance(t, dict) and t.get("id") in wanted and "tool_config" in t] or None
    messages = [{"role": m["role"], "content": m["content"]} for m in req.get("messages") or []]
    parameters = req.get("parameters") or {}
    result = await scopes.direct(  # a scoped token: its models (403) and maxSpend (reserved, settled) hold here too
        kernel, ident, provider, model, messages, tools, parameters.get("max_tokens") if isinstance(parameters, dict)
        else None, lambda: call_llm(kernel, ident, provider, model, messages, parameters, tools=tools,
                                    workspace_id=workspace_id))
    return {"content": result.content, "thoughts": result.thoughts, "model": f"{provider}/{model}"}


async def _run_agent(kernel: "Kernel", ident: "Identity", req: dict[str, Any]) -> dict[str, Any]:
    """Branch A: ``model`` names a deployed agent; the last user message is its ``inputText``."""
    from gofannon.services import deployments

    name = req.get("model") or ""
    user_texts = [m.get("content") for m in req.get("messages") or [] if m.get("role") == "user"]
    if not user_texts:
        raise ValueError("No user message found to run the agent with.")
    params = dict(req.get("parameters") or {})
    llm_settings = {_LLM_SETTING_KEYS[k]: v for k, v in params.items() if k in _LLM_SETTING_KEYS} or None
    input_dict = {**params, "inputText": user_texts[-1]}
    try:
        await deployments.load_deployed(kernel, name, ident)
    except NotFound:
        raise ValueError(f"Could not find a deployed agent with name '{name}'") from None
    from gofannon.services import scopes

    await scopes.check_budget(kernel, ident)  # as /rest: a token's used-up budget stops the run before it starts
    result = await deployments.run_deployed_agent(kernel, ident, name, input_dict, llm_settings=llm_settings)
    if isinstance(result, dict):
        content = result["outputText"] if "outputText" in result else json.dumps(result, default=str)
        thoughts: Any = result
    else:
        content, thoughts = str(result), {"raw_output": str(result)}
    if not isinstance(content, str):
        content = json.dumps(content, default=str)
    return {"content": content, "thoughts": json.loads(json.dumps(thoughts, default=str)),
            "model": f"gofannon/{name}"}


async def process_chat_job(kernel: "Kernel", ticket_id: str, ident: dict[str, Any]) -> dict[str, Any]:
    """The ``chat`` job. Returns the final status (the ticket document holds the answer)."""
    worker = f"{kernel.role}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    doc = await claim(kernel, ticket_id, worker)
    if doc is None:
        return {"ticket_id": ticket_id, "status": "skipped"}
    who = ident_from(ident)
    req = doc.get("request") or {}
    beat = kernel.spawn(_heartbeat_loop(kernel, ticket_id, worker), name=f"ticket-heartbeat-{ticket_id}")
    try:
        if (req.get("provider") or "") == "gofannon":
            result = await _run_agent(kernel, who, req)
        else:
            result = await _run_llm(kernel, who, req, workspace_id=doc.get("workspaceId"))
    except asyncio.CancelledError:
        await asyncio.shield(finish(kernel, ticket_id, error="504: The chat request was stopped before it finished.",
                                    worker=worker))
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is the ticket's answer
        if not isinstance(exc, GofannonError):
            log.info("chat ticket %s failed: %s", ticket_id, exc)
        await finish(kernel, ticket_id, error=error_text(exc), worker=worker)
        kernel.record("chat_ticket_failed", error_text(exc), level="WARNING", user_id=who.uid,
                      metadata={"ticketId": ticket_id})
        return {"ticket_id": ticket_id, "status": "failed"}
    finally:
        beat.cancel()
    await finish(kernel, ticket_id, result=result, worker=worker)
    return {"ticket_id": ticket_id, "status": "completed"}


async def _heartbeat_loop(kernel: "Kernel", ticket_id: str, worker: str) -> None:
    interval = max(0.05, kernel.settings.ticket_lease_s / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            if not await heartbeat(kernel, ticket_id, worker):
                return
        except Exception:  # noqa: BLE001 - a missed beat is retried next time
            log.warning("heartbeat of ticket %s failed", ticket_id, exc_info=True)


# -- sweeper ----------------------------------------------------------------------------------------
async def sweep(kernel: "Kernel", *, retention: bool = True) -> dict[str, int]:
    """One pass: fail abandoned and never-picked-up tickets, delete expired ones. Returns counts."""
    s = kernel.settings
    counts = {"abandoned": 0, "unclaimed": 0, "expired": 0}
    lease_cutoff = _ago(s.ticket_lease_s)
    for doc in await kernel.store.find(TICKETS, {"status": "processing"}):
        beat = doc.get("heartbeat_at") or doc.get("updated_at") or ""
        if beat < lease_cutoff and await finish(
                kernel, doc["_id"], only_if=("processing",),
                error=f"500: The worker processing this chat stopped (no heartbeat for {s.ticket_lease_s:g} s)."):
            counts["abandoned"] += 1
    pending_cutoff = _ago(s.ticket_pending_s)
    for doc in await kernel.store.find(TICKETS, {"status": "pending"}):
        if (doc.get("created_at") or "") < pending_cutoff and await finish(
                kernel, doc["_id"], only_if=("pending",),
                error=f"503: No worker picked up this chat within {s.ticket_pending_s:g} s."):
            counts["unclaimed"] += 1
    if retention:
        expiry_cutoff = _ago(s.ticket_retention_hours * 3600)
        old = [d["_id"] for d in await kernel.store.list(TICKETS)
               if (d.get("created_at") or "") < expiry_cutoff and d.get("status") in TERMINAL]
        if old:
            counts["expired"] = await kernel.store.delete_many(TICKETS, old)
    if any(counts.values()):
        kernel.record("chat_tickets_swept", json.dumps(counts), metadata=counts)
    return counts


async def _sweeper(kernel: "Kernel") -> None:
    interval = max(0.05, kernel.settings.ticket_sweep_s)
    retention_every = max(1, int(600 / interval))  # the full scan for retention runs about every 10 minutes
    n = 0
    while True:
        try:
            await sweep(kernel, retention=n % retention_every == 0)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - try again next round
            log.warning("ticket sweep failed", exc_info=True)
        n += 1
        await asyncio.sleep(interval)


async def start(kernel: "Kernel") -> None:
    if kernel.role in ("api", "worker"):
        kernel.spawn(_sweeper(kernel), name="ticket-sweeper")
