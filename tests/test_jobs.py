"""The job queue: the trivial ``echo`` job in-process and through RQ with a real ``gofannon worker``."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import pytest

from gofannon.jobs import JobFailed, JobTimeout
from gofannon.kernel import Kernel
from gofannon.settings import Settings


@pytest.fixture
async def kernel_for(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Kernel] = []

    async def open_kernel(**env: str) -> Kernel:
        kernel = Kernel(make_settings(**{"GOFANNON_STORAGE": "memory", **env}))
        await kernel.open()
        opened.append(kernel)
        return kernel

    yield open_kernel
    for kernel in reversed(opened):
        await kernel.close()


async def test_inline_queue_runs_echo_in_the_api_process(kernel_for: Any) -> None:
    kernel = await kernel_for()
    assert kernel.queue.name == "inline"
    assert await kernel.queue.call("echo", {"x": [1, "α"]}, timeout=10) == {"echo": {"x": [1, "α"]}, "role": "api"}


async def test_inline_queue_reports_a_failing_job_with_its_message(kernel_for: Any) -> None:
    kernel = await kernel_for()
    with pytest.raises(JobFailed, match="^boom$"):
        await kernel.queue.call("echo", {"fail": "boom"}, timeout=10)


async def test_inline_queue_stops_a_job_at_its_timeout(kernel_for: Any) -> None:
    kernel = await kernel_for()
    with pytest.raises(JobTimeout):
        await kernel.queue.call("echo", {"sleep": 30}, timeout=0.2)


async def test_inline_submit_then_result(kernel_for: Any) -> None:
    kernel = await kernel_for()
    job_id = await kernel.queue.submit("echo", {"n": 1}, keep_result=True)
    assert (await kernel.queue.result(job_id, wait=10))["echo"] == {"n": 1}


@pytest.fixture
def worker(rq_worker: Callable[..., dict[str, str]]) -> dict[str, str]:
    """A real ``gofannon worker`` process on the test Redis; the env API processes share with it."""
    return rq_worker(GOFANNON_STORAGE="memory", GOFANNON_QUEUE="test-jobs")


async def test_with_redis_the_echo_job_runs_in_the_worker_not_the_api(kernel_for: Any, worker: dict[str, str]) -> None:
    kernel = await kernel_for(**worker)
    assert kernel.queue.name == "rq"
    result = await kernel.queue.call("echo", {"x": [1, "α"]}, timeout=20)
    assert result == {"echo": {"x": [1, "α"]}, "role": "worker"}


async def test_with_redis_a_failing_job_raises_job_failed_with_its_message(kernel_for: Any, worker: dict[str, str]) -> None:
    kernel = await kernel_for(**worker)
    with pytest.raises(JobFailed, match="^boom in the worker$"):
        await kernel.queue.call("echo", {"fail": "boom in the worker"}, timeout=20)
    # the worker survives a failed job
    assert (await kernel.queue.call("echo", {"after": True}, timeout=20))["echo"] == {"after": True}


async def test_with_redis_a_job_over_its_timeout_is_stopped_and_reported(kernel_for: Any, worker: dict[str, str]) -> None:
    kernel = await kernel_for(**worker)
    with pytest.raises(JobTimeout, match="exceeded"):
        await kernel.queue.call("echo", {"sleep": 60}, timeout=0.5)
    assert (await kernel.queue.call("echo", {"next": 1}, timeout=20))["role"] == "worker"


async def test_with_redis_fire_and_forget_jobs_are_not_run_by_the_api(kernel_for: Any, redis_url: str) -> None:
    """No worker running: a submitted job waits in Redis rather than running in the API process."""
    kernel = await kernel_for(REDIS_URL=redis_url, GOFANNON_QUEUE="nobody-serves-this")
    job_id = await kernel.queue.submit("echo", {"n": 1}, keep_result=True)
    # longer than redis-py's 5 s socket timeout: waiting stays a JobTimeout, never a Redis error
    with pytest.raises(JobTimeout, match="within 5.5 s"):
        await kernel.queue.result(job_id, wait=5.5)
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen("rq:queue:nobody-serves-this") == 1
    finally:
        client.close()


async def test_a_job_waiting_on_another_job_does_not_deadlock_the_inline_queue(kernel_for: Any) -> None:
    kernel = await kernel_for(GOFANNON_JOB_CONCURRENCY="2")
    result = await kernel.queue.call("echo", {"nested": {"depth": 1}}, timeout=20)
    assert result["inner"] == {"echo": {"depth": 1}, "role": "api"}


async def test_with_redis_one_worker_runs_a_job_that_waits_on_another_job(kernel_for: Any, worker: dict[str, str]) -> None:
    kernel = await kernel_for(**worker)
    result = await kernel.queue.call("echo", {"nested": {"depth": 1}}, timeout=20)
    assert result["role"] == "worker" and result["inner"] == {"echo": {"depth": 1}, "role": "worker"}


async def test_with_redis_a_long_job_does_not_hold_up_a_short_one(kernel_for: Any, worker: dict[str, str]) -> None:
    kernel = await kernel_for(**worker)
    long_id = await kernel.queue.submit("echo", {"sleep": 2}, timeout=30, keep_result=True)
    assert (await kernel.queue.call("echo", {"quick": True}, timeout=20))["echo"] == {"quick": True}
    assert (await kernel.queue.result(long_id, wait=20))["echo"] == {"sleep": 2}


async def raises_timeout_job(kernel: Any, **payload: Any) -> Any:
    raise TimeoutError("the upstream took too long")


async def test_a_job_raising_timeout_error_itself_is_a_failure_not_a_timeout(
        kernel_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from gofannon.jobs import JOB_FUNCTIONS, run_job

    monkeypatch.setitem(JOB_FUNCTIONS, "raises_timeout", f"{__name__}:raises_timeout_job")
    kernel = await kernel_for()
    with pytest.raises(JobFailed, match="^the upstream took too long$"):
        await kernel.queue.call("raises_timeout", {}, timeout=10)
    with pytest.raises(JobFailed, match="unknown job 'nope'"):
        await run_job(kernel, "nope", {}, None)
    with pytest.raises(JobTimeout, match="exceeded 0.1 s"):
        await run_job(kernel, "echo", {"sleep": 5}, 0.1)


async def test_a_stopping_worker_finishes_its_running_job_and_delivers_the_result(
        kernel_for: Any, redis_url: str, tmp_path: Any) -> None:
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {"APP_ENV": "test", "REDIS_URL": redis_url, "GOFANNON_STORAGE": "memory", "GOFANNON_QUEUE": "stopping",
           "GOFANNON_DATA_DIR": str(tmp_path / "w"), "GOFANNON_SANDBOX_POOL_SIZE": "1"}
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "gofannon", "worker", "--grace", "20"],
                                env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "ready on queue" not in log_path.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.05)
            kernel = await kernel_for(**env)
            job_id = await kernel.queue.submit("echo", {"sleep": 1.5, "n": 7}, timeout=30, keep_result=True)
            while f"Job OK ({job_id})" not in log_path.read_text():  # RQ has handed the job to our loop
                assert time.monotonic() < deadline + 30, log_path.read_text()
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)  # while the job is still sleeping
            assert (await kernel.queue.result(job_id, wait=30))["echo"] == {"sleep": 1.5, "n": 7}
            try:
                code = await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, f"worker exit {code}; its log:\n{log_path.read_text()[-3000:]}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
