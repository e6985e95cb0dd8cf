"""RQ job queue, selected when ``REDIS_URL`` is set: API processes enqueue, ``gofannon worker`` runs.

RQ carries the job (JSON-serialised, never pickled) to a worker. The result does not travel through
RQ's result store, which callers would have to poll: the worker pushes it to a per-job Redis list
that the waiting caller ``BLPOP``s with redis.asyncio, so it arrives as soon as it exists.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

from gofannon.jobs import CARRIED, JobFailed, JobTimeout
from gofannon.observability import job_context

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

#: The RQ job function every job runs through (see gofannon.jobs.worker.perform).
PERFORM = "gofannon.jobs.worker.perform"
#: Extra seconds RQ grants past a job's own timeout, so the job reports its timeout itself.
RQ_TIMEOUT_MARGIN = 30
#: How long an uncollected result waits in Redis.
RESULT_TTL_S = 3600
#: Longest single BLPOP while waiting for a result (below redis-py's socket timeout).
BLPOP_SLICE_S = 2.0


def result_key(prefix: str, job_id: str) -> str:
    return f"{prefix}jobresult:{job_id}"


def decode_reply(job_id: str, raw: str | bytes) -> Any:
    """The value a worker reported, or the JobFailed / JobTimeout it stands for."""
    reply = json.loads(raw)
    if reply.get("ok"):
        return reply.get("value")
    if reply.get("kind") == "timeout":
        raise JobTimeout(reply.get("error") or f"job {job_id} timed out")
    raise JobFailed(reply.get("error") or "job failed")


class RQJobQueue:
    name = "rq"

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel
        self.settings = kernel.settings
        self._sync: Any = None  # redis.Redis for RQ (bytes, blocking; used from a thread)
        self._async: Any = None  # redis.asyncio.Redis for waiting on results
        self._queue: Any = None

    async def start(self) -> None:
        import redis
        import redis.asyncio as aioredis
        from rq import Queue
        from rq.serializers import JSONSerializer

        url = self.settings.redis_url
        if not url:
            raise RuntimeError("the RQ job queue needs REDIS_URL")
        self._sync = redis.Redis.from_url(url)
        # Every caller awaiting a result holds a connection in BLPOP: a blocking pool makes a burst beyond
        # the pool's size wait its turn instead of failing with "Too many connections".
        self._async = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(url, max_connections=1024, timeout=60))
        self._queue = Queue(self.settings.job_queue_name, connection=self._sync, serializer=JSONSerializer)

    async def close(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def submit(self, job: str, payload: dict[str, Any], *, job_id: str | None = None,
                     timeout: float | None = None, keep_result: bool = False) -> str:
        if self._queue is None:
            raise RuntimeError("the job queue is not started")
        job_id = job_id or uuid.uuid4().hex
        reply = result_key(self.settings.redis_prefix, job_id) if keep_result else None
        carried = job_context()  # the worker's log lines and spans join this request's
        if carried:
            payload = {**payload, CARRIED: carried}
        rq_timeout = int(timeout) + RQ_TIMEOUT_MARGIN if timeout else -1
        await asyncio.to_thread(
            self._queue.enqueue_call,
            PERFORM,
            kwargs={"job": job, "payload": payload, "reply_key": reply, "timeout": timeout},
            timeout=rq_timeout,
            job_id=job_id,
            result_ttl=0,
            failure_ttl=RESULT_TTL_S * 24,
            description=f"gofannon job {job}",
        )
        return job_id

    async def result(self, job_id: str, *, wait: float) -> Any:
        if self._async is None:
            raise RuntimeError("the job queue is not started")
        key = result_key(self.settings.redis_prefix, job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            # BLPOP in slices shorter than the client's socket timeout (redis-py's default is 5 s): a long
            # wait stays one cheap command every few seconds, and the result still arrives the moment it exists.
            left = deadline - loop.time()
            if left <= 0:
                raise JobTimeout(f"no result for job {job_id} within {wait:g} s")
            got = await self._async.blpop([key], timeout=max(0.01, min(left, BLPOP_SLICE_S)))
            if got is not None:
                return decode_reply(job_id, got[1])

    async def call(self, job: str, payload: dict[str, Any], *, timeout: float) -> Any:
        job_id = await self.submit(job, payload, timeout=timeout, keep_result=True)
        return await self.result(job_id, wait=timeout + 5)
