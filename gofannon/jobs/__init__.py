"""The job queue: chat tickets and agent runs, in-process by default, on RQ when ``REDIS_URL`` is set.

Job functions are ``async def fn(kernel, **payload)`` returning something JSON-serialisable. They are
named in ``JOB_FUNCTIONS`` ("module:function") so an RQ worker imports only what it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

JobFunction = Callable[..., Awaitable[Any]]
#: The payload key under which a job carries its origin's context (request id, trace context) to
#: another process; ``run_job`` takes it out before calling the job function.
CARRIED = "_context"

JOB_FUNCTIONS: dict[str, str] = {
    "echo": "gofannon.jobs:echo_job",
    "chat": "gofannon.jobs.tickets:process_chat_job",
    "agent_run": "gofannon.sandbox.jobs:agent_run_job",
}


class JobFailed(Exception):
    """The job raised; ``str(exc)`` is the job's error text."""


class JobTimeout(Exception):
    """No result within the time the caller was willing to wait."""


def resolve(name: str) -> JobFunction:
    try:
        target = JOB_FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"unknown job {name!r}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


async def run_job(kernel: "Kernel", job: str, payload: dict[str, Any], timeout: float | None) -> Any:
    """Run one job function within its time limit, wherever the queue runs it.

    Raises ``JobTimeout`` when the limit ended the job; a ``TimeoutError`` the job raised itself (a slow
    upstream) stays the job's own failure.
    """
    import asyncio
    import time

    from gofannon.observability import CURRENT, RequestContext, span

    try:
        fn = resolve(job)
    except KeyError as exc:
        raise JobFailed(exc.args[0]) from None
    carried: dict[str, str] | None = None
    if CARRIED in payload:  # a job from another process: its request id and trace context come along
        payload = dict(payload)
        carried = payload.pop(CARRIED) or None
        if carried and carried.get("requestId") and CURRENT.get() is None:
            CURRENT.set(RequestContext(carried["requestId"]))
    started, outcome = time.monotonic(), "error"
    scope_span = span(f"job {job}", {"gofannon.job": job}, carrier=carried)
    handle = scope_span.__enter__()
    try:
        if not timeout:
            value = await fn(kernel, **payload)
        else:
            scope = asyncio.timeout(timeout)
            try:
                async with scope:
                    value = await fn(kernel, **payload)
            except TimeoutError:
                if scope.expired():
                    outcome = "timeout"
                    raise JobTimeout(f"job {job} exceeded {timeout:g} s") from None
                raise
        # A job that reports its own status (a chat ticket: completed/failed/skipped) is counted by it.
        status = value.get("status") if isinstance(value, dict) else None
        outcome = status if isinstance(status, str) else "success"
        return value
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        # DEBUG: no log line per job at the default level; record_event sinks (metrics) still see it.
        kernel.record("job_finished", f"{job} {outcome}", level="DEBUG", metadata={
            "job": job, "outcome": outcome, "durationMs": round((time.monotonic() - started) * 1000, 2)})
        handle.set("gofannon.job.outcome", outcome)
        if outcome not in ("success", "completed", "skipped"):
            handle.error(outcome)
        scope_span.__exit__(None, None, None)


class JobQueue(Protocol):
    name: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def submit(self, job: str, payload: dict[str, Any], *, job_id: str | None = None,
                     timeout: float | None = None, keep_result: bool = False) -> str:
        """Queue a job; returns its id. ``timeout`` bounds its run time; ``keep_result`` keeps the
        result for ``result()``."""
        ...

    async def result(self, job_id: str, *, wait: float) -> Any:
        """The result of a job submitted with ``keep_result``; raises JobFailed or JobTimeout."""
        ...

    async def call(self, job: str, payload: dict[str, Any], *, timeout: float) -> Any:
        """Submit and wait for the result."""
        ...


async def echo_job(kernel: "Kernel", **payload: Any) -> Any:
    """A trivial job proving the queue paths: returns its payload, or fails when asked to."""
    if payload.get("fail"):
        raise ValueError(str(payload["fail"]))
    if payload.get("sleep"):
        import asyncio

        await asyncio.sleep(float(payload["sleep"]))
    if payload.get("nested") is not None:  # a job waiting on another job, as a chat calling an agent does
        inner = await kernel.queue.call("echo", payload["nested"], timeout=30)
        return {"echo": payload, "role": kernel.role, "inner": inner}
    return {"echo": payload, "role": kernel.role}
