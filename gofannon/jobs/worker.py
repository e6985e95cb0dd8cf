"""``gofannon worker``: an RQ worker that runs the kernel's async job functions.

RQ's default worker forks a child per job, which would rebuild the kernel (plugins, store, pools)
for every job. This uses RQ's non-forking ``SimpleWorker`` instead and keeps one ``Kernel`` (role
``worker``) open on an asyncio loop in a background thread for the life of the process; each RQ job
hands its coroutine to that loop and waits. Run several workers for parallelism.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from typing import Any

from gofannon.settings import Settings

log = logging.getLogger("gofannon.worker")


class WorkerRuntime:
    """One open Kernel on a private event loop thread, shared by every job this process runs."""

    def __init__(self, settings: Settings) -> None:
        from gofannon.kernel import Kernel

        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gofannon-worker-loop", daemon=True)
        self._thread.start()
        self.kernel = Kernel(settings, role="worker")
        self._submit(self.kernel.open()).result()

    def _submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _run(self, job: str, payload: dict[str, Any], timeout: float | None) -> Any:
        from gofannon.jobs import resolve

        coro = resolve(job)(self.kernel, **payload)
        return await (asyncio.wait_for(coro, timeout) if timeout else coro)

    def run(self, job: str, payload: dict[str, Any], timeout: float | None) -> Any:
        fut = self._submit(self._run(job, payload, timeout))
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # RQ's own time limit (or a shutdown) interrupted the wait
            raise

    def close(self) -> None:
        try:
            self._submit(self.kernel.close()).result(timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> WorkerRuntime:
    """The process's runtime, built on first use (also when RQ's own ``rq worker`` runs our jobs)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime(Settings.load())
        return _runtime


def perform(job: str, payload: dict[str, Any], reply_key: str | None = None, timeout: float | None = None) -> None:
    """The RQ job function: run ``job``, push its outcome to ``reply_key``, fail the RQ job on error."""
    rt = runtime()
    failure: BaseException | None = None
    try:
        reply: dict[str, Any] = {"ok": True, "value": rt.run(job, payload, timeout)}
    except (asyncio.TimeoutError, concurrent.futures.TimeoutError) as exc:
        failure = exc
        reply = {"ok": False, "kind": "timeout", "error": f"job {job} exceeded {timeout} s"}
    except Exception as exc:  # noqa: BLE001 - the job's failure is its result
        failure = exc
        reply = {"ok": False, "kind": "failed", "error": str(exc)}
    if reply_key:
        _push_reply(rt.settings, reply_key, reply)
    if failure is not None:
        raise failure  # RQ records the job in its failed registry, for operators


def _push_reply(settings: Settings, key: str, reply: dict[str, Any]) -> None:
    from gofannon.jobs.rq_queue import RESULT_TTL_S

    client = _reply_client(settings)
    text = json.dumps(reply, ensure_ascii=False, default=str)
    pipe = client.pipeline(transaction=True)
    pipe.rpush(key, text)
    pipe.expire(key, RESULT_TTL_S)
    pipe.execute()


_reply_redis: Any = None


def _reply_client(settings: Settings) -> Any:
    global _reply_redis
    if _reply_redis is None:
        import redis

        _reply_redis = redis.Redis.from_url(settings.redis_url)
    return _reply_redis


def run_worker(settings: Settings, *, burst: bool = False, name: str | None = None) -> int:
    """Serve the RQ queue ``GOFANNON_QUEUE`` until stopped (or until it is empty, with ``burst``)."""
    global _runtime
    if not settings.redis_url:
        raise SystemExit("gofannon worker needs REDIS_URL: without it jobs run inside `gofannon serve`")
    import redis
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    conn = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.job_queue_name, connection=conn, serializer=JSONSerializer)
    with _runtime_lock:
        _runtime = WorkerRuntime(settings)
    try:
        worker = SimpleWorker([queue], connection=conn, name=name, serializer=JSONSerializer)
        log.info("worker %s serving queue %r", worker.name, settings.job_queue_name)
        print(f"gofannon worker {worker.name} ready on queue {settings.job_queue_name!r}", flush=True)
        worker.work(burst=burst, logging_level=settings.log_level.upper(), with_scheduler=False)
    finally:
        with _runtime_lock:
            rt, _runtime = _runtime, None
        if rt is not None:
            rt.close()
        conn.close()
    return 0
