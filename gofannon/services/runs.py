"""Agent runs: executing code in the sandbox, run records, live events, stop, retention.

Every run goes through the ``agent_run`` job (``gofannon.sandbox.jobs``). In-process (no ``REDIS_URL``)
the job runs on the API's event loop, so its live events go straight into a ``LocalChannel`` the
streaming handler reads, and stop cancels the run's task directly. With ``REDIS_URL`` a ``gofannon
worker`` runs the job: events travel through a Redis stream per run (replay-then-live for any API
process) and stop is a flag on the run record that the worker's watcher polls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from gofannon.errors import NotFound
from gofannon.models.run import RUNS, nullable
from gofannon.services.broker import RunBroker, RunContext
from gofannon.services.ownership import EDIT, OWNER_FIELD, READ, list_in_workspace, load_for, shared_workspace
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.runs")

DEFAULT_AGENT_NAME = "sandbox_agent"
STOPPED_ERROR = "Run stopped by user."
INTERRUPTED_ERROR = "Run interrupted: the server stopped it (shutdown or the job's time limit)."
LOCAL_KEY = "runs.local"
REDIS_KEY = "runs.redis"
STREAM_TTL_S = 3600
STOP_POLL_S = 1.0
EVICT_EVERY_S = 3600.0
SWEEP_EVERY_S = 60.0


# -- schema warnings (§4.3) -------------------------------------------------------------------------------
_TYPE_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "float": (int, float), "boolean": (bool,), "list": (list,),
}


def schema_warnings(result: Any, schema: dict[str, Any] | None) -> list[str]:
    """Advisory differences between a result and the declared output schema, in the reference's words."""
    if not schema:
        return []
    keys = list(schema)
    if not isinstance(result, dict):
        return [f"Output is not a dict (got {type(result).__name__}). Expected keys: {keys}."]
    warnings: list[str] = []
    missing = sorted(k for k in keys if k not in result)
    if missing:
        warnings.append(f"Missing required output keys: {missing}")
    extra = sorted(str(k) for k in result if k not in schema)
    if extra:
        warnings.append(
            f"Unexpected output keys not in schema: {extra}. The composer LLM may have ignored the output schema"
            " — try regenerating the code, or update the schema."
        )
    for key, declared in schema.items():
        if key not in result:
            continue
        expected = _TYPE_CHECKS.get(str(declared).lower())
        if expected is None:
            continue
        value = result[key]
        if str(declared).lower() == "integer" and isinstance(value, bool):
            warnings.append(f"Output '{key}' is a boolean but schema declares integer.")
        elif not isinstance(value, expected):
            warnings.append(f"Output '{key}' has type {type(value).__name__} but schema declares {declared}.")
    return warnings


# -- event channels ---------------------------------------------------------------------------------------
class Channel(Protocol):
    async def publish(self, event: dict[str, Any]) -> None: ...
    async def finish(self, done: dict[str, Any]) -> None: ...
    async def read(self, cursor: Any, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any] | None, Any]:
        """Events after ``cursor`` (waiting up to ``timeout`` for some), the done frame if the run ended,
        and the new cursor."""
        ...


class LocalChannel:
    """Events of a run executing in this process; readers replay from any index, then wait."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.done: dict[str, Any] | None = None
        self._changed = asyncio.Event()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._wake()

    async def finish(self, done: dict[str, Any]) -> None:
        self.done = done
        self._wake()

    async def read(self, cursor: Any, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any] | None, Any]:
        index = int(cursor or 0)
        if index >= len(self.events) and self.done is None:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        events = self.events[index:]
        return events, (self.done if self.done is not None else None), index + len(events)


class RedisChannel:
    """Events of a run executing on a worker: one Redis stream per run, expiring after the run."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.key = f"gofannon:run:{run_id}:events"

    async def publish(self, event: dict[str, Any]) -> None:
        await self.client.xadd(self.key, {"e": json.dumps(event, default=str)}, maxlen=2500, approximate=True)

    async def finish(self, done: dict[str, Any]) -> None:
        await self.client.xadd(self.key, {"d": json.dumps(done, default=str)})
        await self.client.expire(self.key, STREAM_TTL_S)

    async def read(self, cursor: Any, timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any] | None, Any]:
        last = cursor or "0-0"
        reply = await self.client.xread({self.key: last}, count=500, block=max(1, int(timeout * 1000)))
        events: list[dict[str, Any]] = []
        done: dict[str, Any] | None = None
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                data = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
                if "d" in data:
                    done = json.loads(data["d"])
                elif "e" in data:
                    events.append(json.loads(data["e"]))
        return events, done, last


class _RedisClient:
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(url)

    async def close(self) -> None:
        await self.client.aclose()


class LocalRuns:
    """Runs executing in this process: their channels and sandbox tasks (for stop)."""

    def __init__(self) -> None:
        self.channels: dict[str, LocalChannel] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.stopping: set[str] = set()

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()


def local(kernel: "Kernel") -> LocalRuns:
    return kernel.component(LOCAL_KEY, LocalRuns)


def remote(kernel: "Kernel") -> bool:
    """Runs execute on workers (REDIS_URL set)."""
    return bool(kernel.settings.redis_url)


def channel(kernel: "Kernel", run_id: str) -> Channel:
    if remote(kernel):
        client = kernel.component(REDIS_KEY, lambda: _RedisClient(kernel.settings.redis_url or "")).client
        return RedisChannel(client, run_id)
    runs = local(kernel)
    ch = runs.channels.get(run_id)
    if ch is None:
        ch = runs.channels[run_id] = LocalChannel()
    return ch


# -- execution --------------------------------------------------------------------------------------------
def identity_payload(ident: "Identity") -> dict[str, Any]:
    return asdict(ident)


def identity_from(payload: dict[str, Any]) -> "Identity":
    from gofannon.auth import Identity

    return Identity(**payload)


def spec_from_agent(agent: dict[str, Any], input_dict: Any) -> dict[str, Any]:
    """A run spec (RunCodeRequest's wire keys) for a saved agent."""
    return {
        "code": agent.get("code") or "", "inputDict": input_dict, "tools": agent.get("tools") or {},
        "gofannonAgents": agent.get("gofannonAgents") or [], "envVars": agent.get("envVars") or [],
        "friendlyName": agent.get("friendlyName") or agent.get("name"), "agentId": agent.get("_id"),
        "outputSchema": None, "llmSettings": None, "agentOwnerId": agent.get(OWNER_FIELD),
        # An agent of a shared workspace charges its model calls to that workspace too (docs/workspaces.md).
        "workspaceId": shared_workspace(agent),
        # The route admitted the caller's token for ``agent/<name>``: the agent's own calls are its choice, not
        # held to the token's ``models`` (run-code's code is: see ``RunBroker.checks_models``).
        "admittedAgent": True,
    }


def _outcome(status: str, result: Any, error: str | None, *, trace: list[dict[str, Any]] | None = None,
             ops_log: list[dict[str, Any]] | None = None, warnings: list[str] | None = None,
             limit: str | None = None, http_error: Any = None) -> dict[str, Any]:
    return {"outcome": status, "result": result, "error": error, "schemaWarnings": warnings or [],
            "opsLog": ops_log or [], "trace": trace or [], "limit": limit, "httpError": http_error}


async def execute(kernel: "Kernel", ident: "Identity", spec: dict[str, Any], *, run_id: str | None = None,
                  capture_trace: bool = True, publish: Any = None) -> dict[str, Any]:
    """Run agent code in the sandbox as ``ident``; never raises for the agent's own failures."""
    from gofannon import sandbox
    from gofannon.models.agent import LlmSettings
    from gofannon.services.agents import load_usable

    agent_name = spec.get("friendlyName") or DEFAULT_AGENT_NAME
    llm_settings = LlmSettings.model_validate(spec["llmSettings"]) if spec.get("llmSettings") else None
    timeout = float(kernel.settings.sandbox_timeout_s)
    ctx = RunContext(kernel=kernel, ident=ident, run_id=run_id, llm_settings=llm_settings,
                     capture_trace=capture_trace, publish=publish, deadline=time.monotonic() + timeout,
                     workspace_id=spec.get("workspaceId") or None)
    agents = await load_usable(kernel, ident, list(spec.get("gofannonAgents") or []),
                               on_behalf_of=spec.get("agentOwnerId"))
    if agents is None:
        return _outcome("error", None, "ValueError: Could not load one or more dependent Gofannon agents.")
    broker = RunBroker(ctx, agent_name=agent_name, depth=0, agents=agents,
                       checks_models=not spec.get("admittedAgent"))
    req = sandbox.SandboxRequest(
        code=spec.get("code") or "", input_dict=spec.get("inputDict"), tools=spec.get("tools") or {},
        env_vars={e["key"]: e["value"] for e in spec.get("envVars") or []}, agent_name=agent_name,
        agent_id=spec.get("agentId"), depth=0, run_id=run_id, timeout=timeout, capture_trace=capture_trace,
    )
    out = await sandbox.run_code(kernel, req, broker)
    trace = ctx.trace if ctx.trace or not capture_trace else list(out.trace or [])
    http_error = None
    if out.error is not None and ctx.http_error is not None and str(ctx.http_error.detail) in out.error:
        http_error = {"status": ctx.http_error.status, "detail": ctx.http_error.detail}
    if out.error is not None:
        return _outcome("error", None, out.error, trace=trace, ops_log=broker.ops_log, limit=out.limit,
                        http_error=http_error)
    warnings = schema_warnings(out.result, spec.get("outputSchema"))
    return _outcome("success", out.result, None, trace=trace, ops_log=broker.ops_log, warnings=warnings)


async def run_job(kernel: "Kernel", ident: "Identity", spec: dict[str, Any], *, run_id: str | None,
                  record: bool, capture_trace: bool) -> dict[str, Any]:
    """The body of the ``agent_run`` job, in a trace span of its own (the LLM calls it makes are its children)."""
    from gofannon.observability import span

    with span("agent run", {"gofannon.run.id": run_id or "", "gofannon.agent.name": spec.get("friendlyName") or
                            DEFAULT_AGENT_NAME}) as handle:
        outcome = await _run_job(kernel, ident, spec, run_id=run_id, record=record, capture_trace=capture_trace)
        handle.set("gofannon.run.outcome", outcome["outcome"])
        if outcome["outcome"] != "success":
            handle.error(str(outcome.get("error") or outcome["outcome"])[:200])
        return outcome


async def _run_job(kernel: "Kernel", ident: "Identity", spec: dict[str, Any], *, run_id: str | None,
                   record: bool, capture_trace: bool) -> dict[str, Any]:
    """Execute, stream events, honour stop, complete the record."""
    started = time.monotonic()
    ch = channel(kernel, run_id) if run_id else None
    runs = local(kernel)
    seen: list[dict[str, Any]] = []  # what was published, kept for a stopped run's record

    async def publish(event: dict[str, Any]) -> None:
        seen.append(event)
        if ch is not None:
            await ch.publish(event)

    task = asyncio.ensure_future(
        execute(kernel, ident, spec, run_id=run_id, capture_trace=capture_trace, publish=publish)
    )
    watcher: asyncio.Task[Any] | None = None
    if run_id:
        runs.tasks[run_id] = task
        if record:  # stop may be asked of another process (a worker's API, a second API process)
            watcher = asyncio.ensure_future(_watch_stop(kernel, run_id, task))
    try:
        outcome = await task
    except asyncio.CancelledError:
        if run_id is None:
            raise
        if run_id not in runs.stopping:
            # The job itself was cancelled (shutdown, the queue's time limit): end the record, then go.
            interrupted = _outcome("error", None, INTERRUPTED_ERROR, trace=seen)
            await _finish(kernel, run_id, record, ch, interrupted)
            raise
        outcome = _outcome("stopped", None, STOPPED_ERROR, trace=seen)
    except Exception as exc:  # noqa: BLE001 - a broken sandbox must still end the run visibly
        log.exception("agent run %s failed in the host", run_id)
        outcome = _outcome("error", None, f"{type(exc).__name__}: {exc}")
    finally:
        if watcher is not None:
            watcher.cancel()
        if run_id:
            runs.tasks.pop(run_id, None)
            runs.stopping.discard(run_id)
    if run_id:
        await _finish(kernel, run_id, record, ch, outcome)
    # DEBUG: not a log line per run at the default level, but every record_event sink (metrics) sees it.
    kernel.record("agent_run_finished", outcome["outcome"], level="DEBUG", user_id=ident.uid,
                  metadata={"outcome": outcome["outcome"], "durationMs": round((time.monotonic() - started) * 1000, 2)})
    if outcome["outcome"] != "success":
        kernel.record("agent_run_failed", str(outcome.get("error") or ""), level="WARNING", user_id=ident.uid,
                      metadata={"runId": run_id, "agentId": spec.get("agentId"), "outcome": outcome["outcome"],
                                "agentName": spec.get("friendlyName") or DEFAULT_AGENT_NAME,
                                "limit": outcome.get("limit")})
    return outcome


async def _finish(kernel: "Kernel", run_id: str, record: bool, ch: Channel | None, outcome: dict[str, Any]) -> None:
    """Complete the record and send ``done`` to whoever follows the run."""
    try:
        if record:
            await _complete_record(kernel, run_id, outcome)
        if ch is not None:
            await ch.finish(done_frame(outcome))
            if isinstance(ch, LocalChannel):
                kernel.spawn(_forget_channel(kernel, run_id, ch), name=f"forget-run-{run_id}")
    except Exception:  # noqa: BLE001 - best effort: the outcome itself is still returned
        log.exception("finishing run %s failed", run_id)


async def _forget_channel(kernel: "Kernel", run_id: str, ch: LocalChannel, after: float = 300.0) -> None:
    """Keep a finished run's live channel a while (late readers replay it), then rely on the record."""
    await asyncio.sleep(after)
    if local(kernel).channels.get(run_id) is ch:
        local(kernel).channels.pop(run_id, None)


async def _watch_stop(kernel: "Kernel", run_id: str, task: asyncio.Task[Any]) -> None:
    """Stop the run when its record is flagged by ``POST /runs/{id}/stop`` in another process."""
    while not task.done():
        await asyncio.sleep(STOP_POLL_S)
        doc = await kernel.store.get(RUNS, run_id)
        if doc is not None and doc.get("stopRequested"):
            local(kernel).stopping.add(run_id)
            task.cancel()
            return


def done_frame(outcome: dict[str, Any]) -> dict[str, Any]:
    return {"outcome": outcome["outcome"], "result": outcome["result"], "error": outcome["error"],
            "schemaWarnings": nullable(outcome.get("schemaWarnings")), "opsLog": nullable(outcome.get("opsLog"))}


def job_payload(ident: "Identity", spec: dict[str, Any], *, run_id: str | None = None, record: bool = False,
                capture_trace: bool = True) -> dict[str, Any]:
    return {"ident": identity_payload(ident), "spec": spec, "runId": run_id, "record": record,
            "captureTrace": capture_trace}


def job_timeout(kernel: "Kernel") -> float:
    """How long a caller waits for a run: the sandbox's wall clock plus room for nested set-up."""
    return float(kernel.settings.sandbox_timeout_s) + 15.0


async def run_now(kernel: "Kernel", ident: "Identity", spec: dict[str, Any], *,
                  capture_trace: bool = True, record: bool = False) -> dict[str, Any]:
    """Run through the job queue and wait for the outcome (run-code, /rest, chat, /v1). ``record``: keep a
    run record (``GET /runs/{id}``), as run-code and the agents-as-models of ``/v1`` do."""
    from gofannon.jobs import JobFailed, JobTimeout

    run_id = (await _new_record(kernel, ident, spec))["runId"] if record else None
    timed_out = _outcome("error", None, f"Sandbox limit exceeded: timeout (no result within "
                                        f"{job_timeout(kernel):g} s)", limit="timeout")
    if kernel.role == "worker":
        # Already inside a job (e.g. a chat ticket calling a deployed agent): run here, since queueing and
        # waiting for another job could starve a single worker.
        try:
            return await asyncio.wait_for(
                run_job(kernel, ident, spec, run_id=run_id, record=record, capture_trace=capture_trace),
                job_timeout(kernel))
        except asyncio.TimeoutError:
            outcome = timed_out
    else:
        payload = job_payload(ident, spec, run_id=run_id, record=record, capture_trace=capture_trace)
        try:
            return await kernel.queue.call("agent_run", payload, timeout=job_timeout(kernel))  # type: ignore[no-any-return]
        except JobTimeout:
            outcome = timed_out
        except JobFailed as exc:
            outcome = _outcome("error", None, f"RunFailed: {exc}")
    if run_id is not None:
        await _finish(kernel, run_id, record, None, outcome)
    return outcome


# -- run records ------------------------------------------------------------------------------------------
async def start_recorded(kernel: "Kernel", ident: "Identity", spec: dict[str, Any]) -> dict[str, Any]:
    """Create the record (status running) and queue the run; returns the record."""
    record = await _new_record(kernel, ident, spec)
    channel(kernel, record["runId"])  # the local channel exists before the first event
    await kernel.queue.submit("agent_run", job_payload(ident, spec, run_id=record["runId"], record=True),
                              timeout=job_timeout(kernel))
    return record


async def _new_record(kernel: "Kernel", ident: "Identity", spec: dict[str, Any]) -> dict[str, Any]:
    """A run record, status running, stored before the run starts (so it never goes missing)."""
    run_id = str(uuid.uuid4())
    record: dict[str, Any] = {
        "runId": run_id, "agentId": spec.get("agentId"), "agentName": spec.get("friendlyName") or DEFAULT_AGENT_NAME,
        "status": "running", "startedAt": now_iso(), "completedAt": None, "inputDict": spec.get("inputDict"),
        "error": None, OWNER_FIELD: ident.uid, "result": None, "schemaWarnings": None, "opsLog": None, "events": [],
    }
    if spec.get("workspaceId"):
        record["workspaceId"] = spec["workspaceId"]  # a run in a shared workspace: its members see the record
    await kernel.store.put(RUNS, run_id, record, rev=None)
    return record


async def _complete_record(kernel: "Kernel", run_id: str, outcome: dict[str, Any]) -> None:
    def apply(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        doc.update({
            "status": outcome["outcome"], "completedAt": now_iso(), "error": outcome["error"],
            "result": outcome["result"], "schemaWarnings": nullable(outcome.get("schemaWarnings")),
            "opsLog": nullable(outcome.get("opsLog")), "events": outcome.get("trace") or [],
        })
        return doc

    try:
        await kernel.store.update(RUNS, run_id, apply)
    except Exception:  # noqa: BLE001 - e.g. a result the store cannot encode: keep the status at least
        log.exception("completing run record %s failed", run_id)
        await kernel.store.update(RUNS, run_id, lambda d: None if d is None else {
            **d, "status": "error", "completedAt": now_iso(), "error": "The run's result could not be stored."})


async def get_record(kernel: "Kernel", ident: "Identity", run_id: str, verb: str = READ) -> dict[str, Any]:
    """A run record ``ident`` may ``verb`` (its owner's; in a shared workspace, its members read it)."""
    return await load_for(kernel, ident, RUNS, run_id, verb, not_found=NotFound("Run not found"))


async def list_records(kernel: "Kernel", ident: "Identity", agent_id: str | None = None,
                       workspace_id: str | None = None) -> list[dict[str, Any]]:
    """The run records of ``workspace_id`` (the active workspace, already checked; None = the caller's own)."""
    docs = await list_in_workspace(kernel, RUNS, ident, workspace_id)
    if agent_id:
        docs = [d for d in docs if d.get("agentId") == agent_id]
    docs.sort(key=lambda d: d.get("startedAt") or "", reverse=True)
    return docs  # type: ignore[no-any-return]


def live_events(kernel: "Kernel", run_id: str) -> list[dict[str, Any]] | None:
    ch = None if remote(kernel) else local(kernel).channels.get(run_id)
    return list(ch.events) if ch is not None else None


async def events_so_far(kernel: "Kernel", run_id: str) -> list[dict[str, Any]] | None:
    """The events of a running run, wherever it runs (None when no live channel is known)."""
    if not remote(kernel):
        return live_events(kernel, run_id)
    events: list[dict[str, Any]] = []
    cursor: Any = None
    ch = channel(kernel, run_id)
    while True:
        batch, done, cursor = await ch.read(cursor, 0.001)
        events.extend(batch)
        if not batch or done is not None:
            return events


async def request_stop(kernel: "Kernel", ident: "Identity", run_id: str) -> dict[str, Any]:
    record = await get_record(kernel, ident, run_id, EDIT)
    runs = local(kernel)
    task = runs.tasks.get(run_id)
    if task is not None and not task.done():
        runs.stopping.add(run_id)
        task.cancel()
        return {"runId": run_id, "status": "stopping", "via": "flipped_local"}
    if record.get("status") != "running":
        return {"runId": run_id, "status": record.get("status"), "via": "flipped_local"}
    await kernel.store.update(RUNS, run_id, lambda d: None if d is None else {**d, "stopRequested": True})
    return {"runId": run_id, "status": "stopping", "via": "persisted_remote"}


async def stop_local(kernel: "Kernel", run_id: str) -> None:
    """Stop a run this process started (a streaming client went away)."""
    runs = local(kernel)
    task = runs.tasks.get(run_id)
    if task is not None and not task.done():
        runs.stopping.add(run_id)
        task.cancel()
    elif remote(kernel):
        await kernel.store.update(RUNS, run_id, lambda d: None if d is None else {**d, "stopRequested": True})


# -- retention --------------------------------------------------------------------------------------------
async def evict_expired(kernel: "Kernel") -> int:
    """Delete run records older than ``run_retention_hours``."""
    cutoff = (datetime.now(timezone.utc) - timedelta(hours=kernel.settings.run_retention_hours)).replace(tzinfo=None)
    old = [d["_id"] for d in await kernel.store.list(RUNS)
           if (d.get("completedAt") or d.get("startedAt") or "9999") < cutoff.isoformat(timespec="microseconds")]
    if old:
        await kernel.store.delete_many(RUNS, old)
    return len(old)


async def fail_abandoned(kernel: "Kernel") -> int:
    """Runs still ``running`` well past the longest a run may take belong to a process that died: end them."""
    limit = timedelta(seconds=job_timeout(kernel) + 60)
    cutoff = (datetime.now(timezone.utc) - limit).replace(tzinfo=None).isoformat(timespec="microseconds")
    stale = [d["_id"] for d in await kernel.store.find(RUNS, {"status": "running"})
             if (d.get("startedAt") or "") < cutoff]

    def end(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None or doc.get("status") != "running":
            return None
        return {**doc, "status": "error", "completedAt": now_iso(), "error": INTERRUPTED_ERROR}

    for run_id in stale:
        await kernel.store.update(RUNS, run_id, end)
    return len(stale)


async def _evictor(kernel: "Kernel") -> None:
    rounds = 0
    while True:
        try:
            await fail_abandoned(kernel)
            if rounds % int(EVICT_EVERY_S // SWEEP_EVERY_S) == 0:
                await evict_expired(kernel)
        except Exception:  # noqa: BLE001 - try again next round
            log.exception("run retention sweep failed")
        rounds += 1
        await asyncio.sleep(SWEEP_EVERY_S)


async def start(kernel: "Kernel") -> None:
    if kernel.role == "api":
        kernel.spawn(_evictor(kernel), name="runs-evictor")
