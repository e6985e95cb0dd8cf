"""In-process job queue: asyncio tasks with bounded concurrency. The embedded default."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from gofannon.jobs import JobFailed, JobTimeout, run_job

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel


class InlineJobQueue:
    name = "inline"

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel
        self._sem = asyncio.Semaphore(max(1, kernel.settings.job_concurrency))
        self._futures: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiting: dict[object, float] = {}  # jobs not yet given a slot -> when they were submitted

    def depth(self) -> int:
        """Jobs submitted and still waiting for a free slot (metrics read it)."""
        return len(self._waiting)

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting job has waited for a slot; 0 when none waits (metrics read it)."""
        return max(0.0, time.monotonic() - min(self._waiting.values())) if self._waiting else 0.0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, job: str, payload: dict[str, Any], timeout: float | None, fut: asyncio.Future[Any] | None) -> None:
        mark = object()
        self._waiting[mark] = time.monotonic()
        try:
            await self._sem.acquire()
        finally:
            self._waiting.pop(mark, None)
        try:
            try:
                value = await run_job(self.kernel, job, payload, timeout)
            except asyncio.CancelledError:
                if fut is not None and not fut.done():
                    fut.set_exception(JobFailed("job cancelled"))
                raise
            except JobTimeout as exc:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
            except Exception as exc:  # noqa: BLE001 - the job's failure is its result
                if fut is not None and not fut.done():
                    fut.set_exception(JobFailed(str(exc)))
            else:
                if fut is not None and not fut.done():
                    fut.set_result(value)
        finally:
            self._sem.release()

    async def submit(self, job: str, payload: dict[str, Any], *, job_id: str | None = None,
                     timeout: float | None = None, keep_result: bool = False) -> str:
        job_id = job_id or uuid.uuid4().hex
        fut: asyncio.Future[Any] | None = None
        if keep_result:
            fut = self._futures[job_id] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._run(job, payload, timeout, fut))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job_id

    async def result(self, job_id: str, *, wait: float) -> Any:
        fut = self._futures.get(job_id)
        if fut is None:
            raise KeyError(f"no result kept for job {job_id}")
        try:
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except asyncio.TimeoutError:
            raise JobTimeout(f"no result for job {job_id} within {wait} s") from None
        finally:
            if fut.done():
                self._futures.pop(job_id, None)

    async def call(self, job: str, payload: dict[str, Any], *, timeout: float) -> Any:
        job_id = await self.submit(job, payload, timeout=timeout, keep_result=True)
        return await self.result(job_id, wait=timeout + 5)
