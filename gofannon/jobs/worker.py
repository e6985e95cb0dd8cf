"""``gofannon worker``: an RQ worker that runs the kernel's async job functions concurrently.

RQ's default worker forks a child per job, which would rebuild the kernel (plugins, store, pools) for
every job. This uses RQ's non-forking ``SimpleWorker`` and keeps one ``Kernel`` (role ``worker``) open on
an asyncio loop in a background thread for the life of the process. The RQ job function only starts the
job's coroutine on that loop and returns once it holds one of ``concurrency`` slots, so one worker runs
many jobs at once (chats mostly wait on LLMs), and a job that waits for another job (a chat calling a
deployed agent) cannot deadlock a worker. The coroutine reports its outcome itself, on the per-job Redis
list the caller ``BLPOP``s (see gofannon.jobs.rq_queue).

The kernel is built by the caller's ``new_kernel`` (``gofannon worker`` passes the ``Kernel`` class): the jobs
package sits below the kernel, which builds the job queue, so nothing here imports ``gofannon.kernel``. A bare
``rq worker`` running our jobs builds the kernel ``DEFAULT_KERNEL`` names, as ``JOB_FUNCTIONS`` names jobs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gofannon.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

#: Builds the worker's kernel: called as ``new_kernel(settings, role="worker")`` (``Kernel`` itself fits).
KernelFactory = Callable[..., "Kernel"]
#: The kernel class a bare ``rq worker`` uses, by name (module:attribute).
DEFAULT_KERNEL = "gofannon.kernel:Kernel"

log = logging.getLogger("gofannon.worker")

#: Seconds a stopping worker lets running jobs finish before cancelling them.
DEFAULT_GRACE_S = 30.0


class WorkerRuntime:
    """One open Kernel on a private event loop thread, shared by every job this process runs."""

    def __init__(self, settings: Settings, new_kernel: KernelFactory, *, concurrency: int | None = None) -> None:
        self.settings = settings
        self.concurrency = max(1, concurrency or settings.job_concurrency)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gofannon-worker-loop", daemon=True)
        self._thread.start()
        self.kernel = new_kernel(settings, role="worker")
        self._redis: Any = None
        self._call(self._open())

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self) -> None:
        import redis.asyncio as aioredis

        await self.kernel.open()
        if self.settings.redis_url:
            self._redis = aioredis.Redis.from_url(self.settings.redis_url)

    # -- running jobs -------------------------------------------------------------------------------------
    def start_job(self, job: str, payload: dict[str, Any], reply_key: str | None, timeout: float | None) -> None:
        """Start ``job`` on the loop once a slot is free (blocking RQ's loop meanwhile: back-pressure)."""
        self._slots.acquire()
        try:
            fut = asyncio.run_coroutine_threadsafe(self._run(job, payload, reply_key, timeout), self.loop)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._inflight.add(fut)
        fut.add_done_callback(self._finished)

    def _finished(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._inflight.discard(fut)
        self._slots.release()

    async def _run(self, job: str, payload: dict[str, Any], reply_key: str | None, timeout: float | None) -> None:
        from gofannon.jobs import run_job

        cancelled = False
        try:
            reply: dict[str, Any] = {"ok": True, "value": await run_job(self.kernel, job, payload, timeout)}
        except asyncio.CancelledError:
            cancelled = True
            reply = {"ok": False, "kind": "failed", "error": "the worker stopped before the job finished"}
        except Exception as exc:  # noqa: BLE001 - the job's failure is its result
            from gofannon.jobs import JobTimeout

            kind = "timeout" if isinstance(exc, JobTimeout) else "failed"
            reply = {"ok": False, "kind": kind, "error": str(exc)}
            log.warning("job %s %s: %s", job, kind, exc)
        if reply_key and self._redis is not None:
            from gofannon.jobs.rq_queue import RESULT_TTL_S

            try:
                text = json.dumps(reply, ensure_ascii=False, default=str)
                async with self._redis.pipeline(transaction=True) as pipe:
                    await pipe.rpush(reply_key, text).expire(reply_key, RESULT_TTL_S).execute()
            except Exception:  # noqa: BLE001 - the caller will time out; say why here
                log.exception("could not deliver the result of job %s", job)
        if cancelled:
            raise asyncio.CancelledError

    # -- stopping -------------------------------------------------------------------------------------------
    def close(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Let running jobs finish (up to ``grace`` seconds), cancel the rest, close the kernel."""
        with self._lock:
            pending = list(self._inflight)
        if pending:
            log.info("waiting up to %.0f s for %d running job(s)", grace, len(pending))
            _, late = concurrent.futures.wait(pending, timeout=grace)
            for fut in late:
                fut.cancel()
            concurrent.futures.wait(late, timeout=10)
        try:
            self._call(self._close(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    async def _close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        await self.kernel.close()


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> WorkerRuntime:
    """The process's runtime: the one ``run_worker`` opened, or, when RQ's own ``rq worker`` runs our jobs, one
    built on first use with ``DEFAULT_KERNEL``."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            module, _, attr = DEFAULT_KERNEL.partition(":")
            _runtime = WorkerRuntime(Settings.load(), getattr(importlib.import_module(module), attr))
        return _runtime


def perform(job: str, payload: dict[str, Any], reply_key: str | None = None, timeout: float | None = None) -> None:
    """The RQ job function: hand ``job`` to this process's kernel loop (see the module docstring)."""
    runtime().start_job(job, payload, reply_key, timeout)


def run_worker(settings: Settings, new_kernel: KernelFactory, *, burst: bool = False, name: str | None = None,
               concurrency: int | None = None, grace: float = DEFAULT_GRACE_S) -> int:
    """Serve the RQ queue ``GOFANNON_QUEUE`` with a kernel from ``new_kernel`` until stopped (or until it is
    empty, with ``burst``)."""
    global _runtime
    if not settings.redis_url:
        raise SystemExit("gofannon worker needs REDIS_URL: without it jobs run inside `gofannon serve`")
    import redis
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    conn = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.job_queue_name, connection=conn, serializer=JSONSerializer)
    rt = WorkerRuntime(settings, new_kernel, concurrency=concurrency)
    with _runtime_lock:
        _runtime = rt
    try:
        worker = SimpleWorker([queue], connection=conn, name=name, serializer=JSONSerializer)
        log.info("worker %s serving queue %r, %d jobs at once", worker.name, settings.job_queue_name, rt.concurrency)
        print(f"gofannon worker {worker.name} ready on queue {settings.job_queue_name!r} "
              f"({rt.concurrency} jobs at once)", flush=True)
        worker.work(burst=burst, logging_level=settings.log_level.upper(), with_scheduler=False)
    finally:
        with _runtime_lock:
            _runtime = None
        rt.close(grace)
        conn.close()
    return 0
