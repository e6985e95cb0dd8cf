"""Rendering a scrape with prometheus_client (imported here only): the counted series, and the values
read at scrape time (job queue depth and oldest waiting age, sandbox pool, plugin load failures)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gofannon_plugins.observability.metrics.stats import METRICS, STATS, LocalSink

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel
    from gofannon.settings import Settings

log = logging.getLogger("gofannon.metrics")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class LocalCollector:
    """The series a ``LocalSink`` counted, as metric families."""

    def __init__(self, sink: LocalSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        series, in_flight = self.sink.snapshot()
        for name, (kind, doc, labels, buckets) in METRICS.items():
            if kind == "gauge":
                gauge = GaugeMetricFamily(name, doc, labels=labels)
                gauge.add_metric([], in_flight)
                yield gauge
            elif kind == "counter":
                counter = CounterMetricFamily(name, doc, labels=labels)
                for key, value in series[name].items():
                    counter.add_metric(list(key), value)
                yield counter
            else:
                hist = HistogramMetricFamily(name, doc, labels=labels)
                for key, (counts, total) in series[name].items():
                    cumulative, acc = [], 0
                    for bound, count in zip((*buckets, float("inf")), counts):
                        acc += count
                        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), acc))
                    hist.add_metric(list(key), cumulative, sum_value=total)
                yield hist


class ScrapeCollector:
    """Values read when scraped: the job queue, the sandbox pools, plugin load failures."""

    def __init__(self, settings: "Settings", kernels: Iterable["Kernel"]) -> None:
        self.settings = settings
        self.kernels = kernels

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        kernels = list(self.kernels)
        warm = GaugeMetricFamily("gofannon_sandbox_pool_warm", "Warm sandbox children ready for a run (this process).")
        size = GaugeMetricFamily("gofannon_sandbox_pool_size", "Warm sandbox children the pool keeps (this process).")
        start = CounterMetricFamily("gofannon_sandbox_children_started", "Sandbox children started (this process).")
        start_s = CounterMetricFamily("gofannon_sandbox_child_start_seconds",
                                      "Summed time from spawning a sandbox child to its ready signal (this process); "
                                      "divide by gofannon_sandbox_children_started_total for the mean.")
        failures = GaugeMetricFamily("gofannon_plugin_load_failures", "Plugins that failed to load, by plugin.",
                                     labels=["plugin"])
        pool_seen, failed = False, {}
        for kernel in kernels:
            from gofannon.sandbox.pool import _COMPONENT, get_pool

            if kernel.has_component(_COMPONENT) and not pool_seen:
                pool = get_pool(kernel)
                warm.add_metric([], pool.warm)
                size.add_metric([], pool.size)
                start.add_metric([], pool.children_started)
                start_s.add_metric([], pool.child_start_seconds)
                pool_seen = True
            for name, info in kernel.pm.plugins.items():
                if info.error:
                    failed[name] = 1
        for name in sorted(failed):
            failures.add_metric([name[:60]], 1)
        yield from (warm, size, start, start_s, failures)

    def _queue(self) -> Iterator[Metric]:
        name = self.settings.job_queue_name
        depth = GaugeMetricFamily("gofannon_job_queue_depth", "Jobs waiting for a worker, by queue.", labels=["queue"])
        age = GaugeMetricFamily("gofannon_job_queue_oldest_age_seconds",
                                "How long the oldest waiting job has waited, by queue (0 when none waits).",
                                labels=["queue"])
        if self.settings.redis_url:
            try:
                waiting, oldest = _rq_queue(self.settings.redis_url, name)
            except Exception as exc:  # noqa: BLE001 - a scrape still answers while Redis is away
                log.warning("metrics: reading the job queue failed: %s", exc)
            else:
                depth.add_metric([name], waiting)
                age.add_metric([name], oldest)
        else:
            waiting, oldest = 0, 0.0
            for kernel in list(self.kernels):
                queue = kernel.queue
                if queue is not None and hasattr(queue, "depth"):
                    waiting += queue.depth()
                    oldest = max(oldest, queue.oldest_wait() if hasattr(queue, "oldest_wait") else 0.0)
            depth.add_metric(["inline"], waiting)
            age.add_metric(["inline"], oldest)
        yield depth
        yield age


def _rq_queue(url: str, name: str) -> tuple[int, float]:
    """RQ keeps a queue as the list ``rq:queue:<name>`` of job ids, oldest first; a job's hash has ``enqueued_at``."""
    import redis

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        key = f"rq:queue:{name}"
        waiting = int(client.llen(key))
        oldest = 0.0
        first = client.lindex(key, 0) if waiting else None
        if first is not None:
            stamp = client.hget(f"rq:job:{text(first)}", "enqueued_at")
            if stamp:
                when = datetime.fromisoformat(text(stamp).rstrip("Z")).replace(tzinfo=timezone.utc)
                oldest = max(0.0, (datetime.now(timezone.utc) - when).total_seconds())
        return waiting, oldest
    finally:
        client.close()


def registry_for(settings: "Settings", kernels: Iterable["Kernel"]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    sink = STATS.activate()
    if STATS.multiprocess:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)
    else:
        registry.register(LocalCollector(sink))  # type: ignore[arg-type]
    registry.register(ScrapeCollector(settings, kernels))  # type: ignore[arg-type]
    return registry


def render(settings: "Settings", kernels: list["Kernel"]) -> bytes:
    return generate_latest(registry_for(settings, kernels))  # type: ignore[no-any-return]


def serve_port(port: int, host: str, settings: "Settings", kernels: list["Kernel"]) -> Any:
    """Serve the same scrape, without auth, on its own port (a daemon thread of prometheus_client)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=registry_for(settings, kernels))
