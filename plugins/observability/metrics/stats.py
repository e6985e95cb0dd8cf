"""The counting side of the metrics plugin: what exists, and two sinks that count it.

``LocalSink`` keeps plain dicts (no prometheus_client import until a scrape renders them);
``MultiprocessSink`` writes prometheus_client metrics into ``PROMETHEUS_MULTIPROC_DIR`` so that the
processes of ``gofannon serve --workers N`` add up. Both have the same small interface.
"""

from __future__ import annotations

import bisect
import inspect
import os
import threading
import time
from typing import Any, Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LONG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Past this many label sets a metric folds new ones into ``other``: a label can never grow without bound.
MAX_SERIES = 500
OTHER = "other"

#: name -> (kind, help, label names, buckets). Counter names carry no ``_total`` (the exposition adds it).
METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "gofannon_http_requests": ("counter", "HTTP requests answered, by route template, method and status.",
                               ("route", "method", "status"), ()),
    "gofannon_http_request_duration_seconds": ("histogram", "Time to answer an HTTP request (streams: until the end).",
                                               ("route", "method"), LATENCY_BUCKETS),
    "gofannon_http_requests_in_flight": ("gauge", "HTTP requests being answered now.", (), ()),
    "gofannon_jobs": ("counter", "Jobs finished (chat tickets, agent runs), by job and outcome.", ("job", "outcome"), ()),
    "gofannon_job_duration_seconds": ("histogram", "Time a job ran, by job.", ("job",), LONG_BUCKETS),
    "gofannon_chat_tickets": ("counter", "Chat tickets finished, by outcome (completed, failed, ...).", ("outcome",), ()),
    "gofannon_chat_ticket_duration_seconds": ("histogram", "Time a chat ticket ran, by outcome.", ("outcome",),
                                              LONG_BUCKETS),
    "gofannon_agent_runs": ("counter", "Agent runs finished, by outcome (success, error, timeout, stopped).",
                            ("outcome",), ()),
    "gofannon_agent_run_duration_seconds": ("histogram", "Time an agent run took, by outcome.", ("outcome",),
                                            LONG_BUCKETS),
    "gofannon_llm_calls": ("counter", "LLM calls, by provider, model and outcome.", ("provider", "model", "outcome"), ()),
    "gofannon_llm_tokens": ("counter", "LLM tokens, by provider, model and type (input, output).",
                            ("provider", "model", "type"), ()),
    "gofannon_llm_cost_usd": ("counter", "What LLM calls cost (USD, catalog prices), by provider and model.",
                              ("provider", "model"), ()),
    "gofannon_llm_call_duration_seconds": ("histogram", "Time an LLM call took, by provider.", ("provider",),
                                           LONG_BUCKETS),
    "gofannon_budget_refusals": ("counter", "Calls refused because the user's spend allowance is exhausted.", (), ()),
    "gofannon_login_failures": ("counter", "Failed logins and refused credentials, by reason "
                                "(unauthorized, login_callback, admin_password).", ("reason",), ()),
    "gofannon_store_operation_duration_seconds": ("histogram", "Time of one document-store operation, by backend "
                                                  "and operation.", ("backend", "operation"), STORE_BUCKETS),
}

_LLM_FAILURES = {"llm_request_failed": "error", "invalid_api_key": "invalid_api_key",
                 "context_window_exceeded": "context_window_exceeded"}


def _label(value: Any, limit: int = 100) -> str:
    return str(value if value not in (None, "") else "unknown")[:limit]


#: The ``model`` label of a model the catalog does not list. Agent code names any model it likes (a provider
#: such as Ollama takes any name): each name its own series would let one user fill the series cap and fold
#: every later series, provider and outcome included, into ``other``.
UNLISTED = "unlisted"
_LISTED: dict[tuple[str, str], str] = {}
_LISTED_MAX = 4096


def _llm_labels(md: dict[str, Any]) -> tuple[str, str]:
    """(provider, model) labels of an LLM event: the model as named when the catalog lists it, else
    ``unlisted``; a provider the catalog does not know is ``unlisted`` too."""
    provider, model = _label(md.get("provider")), _label(md.get("model"))
    known = _LISTED.get((provider, model))
    if known is not None:
        return provider, known
    from gofannon.llm import catalog

    cat = catalog.active()
    if cat.provider(provider) is None:
        return UNLISTED, UNLISTED
    if cat.model(provider, model) is None:
        return provider, UNLISTED
    if len(_LISTED) >= _LISTED_MAX:
        _LISTED.clear()
    _LISTED[(provider, model)] = model
    return provider, model


class LocalSink:
    """Counts in dicts. Events may come from threads, so they take the lock; requests are counted only on
    the event loop's thread, into cells made once per (route, method, status), without it (the cheapest
    path, since it runs for every request; a scrape copies the cells under the GIL)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: name -> labels -> value: a float (or a one-float list cell) for counters, [bucket counts, sum]
        #: for histograms.
        self.series: dict[str, dict[tuple[str, ...], Any]] = {name: {} for name in METRICS}
        self.in_flight = 0
        self._cells: dict[tuple[str, str, int], tuple[list[float], list[Any]]] = {}
        self._llm_cells: dict[tuple[str, str], tuple[Any, ...]] = {}

    def _key(self, name: str, labels: tuple[str, ...]) -> tuple[str, ...]:
        known = self.series[name]
        if labels in known or len(known) < MAX_SERIES:
            return labels
        return tuple(OTHER for _ in labels)

    def inc(self, name: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        with self.lock:
            self._cell(name, labels)[0] += amount

    def _cell(self, name: str, labels: tuple[str, ...]) -> list[float]:
        """A counter series' one-float cell, made on first use (call under the lock). Every counter is kept as
        one, so the cells the fast paths hold (``_request_cells``, ``llm_call``) and ``inc`` count into the same
        float, whichever comes first (also past ``MAX_SERIES``, where series share the ``other`` one)."""
        series = self.series[name]
        key = self._key(name, labels)
        cell = series.get(key)
        if cell is None:
            cell = series[key] = [0.0]
        return cell  # type: ignore[no-any-return]

    def _histogram(self, name: str, labels: tuple[str, ...]) -> list[Any]:
        """The ``[bucket counts, sum]`` entry of one histogram series, made on first use (call under the lock)."""
        series = self.series[name]
        key = self._key(name, labels)
        entry = series.get(key)
        if entry is None:
            entry = series[key] = [[0] * (len(METRICS[name][3]) + 1), 0.0]
        return entry  # type: ignore[no-any-return]

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        with self.lock:
            entry = self._histogram(name, labels)
            entry[0][bisect.bisect_left(METRICS[name][3], value)] += 1
            entry[1] += value

    def timer(self, name: str, labels: tuple[str, ...]) -> Callable[[float], None]:
        """A fast ``observe`` for one histogram series (for code on the event loop's thread)."""
        buckets = METRICS[name][3]
        with self.lock:
            entry = self._histogram(name, labels)
        counts = entry[0]

        def observe(value: float) -> None:
            counts[bisect.bisect_left(buckets, value)] += 1
            entry[1] += value

        return observe

    # -- the request observer (see gofannon.web.middleware.RequestObserver) -----------------------------
    def started(self, request: Any) -> None:
        self.in_flight += 1

    def finished(self, state: Any, route: str, method: str, status: int, seconds: float) -> None:
        self.in_flight -= 1
        cells = self._cells.get((route, method, status))
        if cells is None:
            cells = self._request_cells(route, method, status)
        cells[0][0] += 1
        hist = cells[1]
        hist[0][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[1] += seconds
        if status >= 400:
            self.count_failure(route, status)

    def llm_call(self, provider: str, model: str, tokens_in: Any, tokens_out: Any, cost: Any, ms: Any) -> None:
        """One successful LLM call: its count, tokens, cost and duration, under one lock, into cells made once
        per (provider, model)."""
        with self.lock:
            cells = self._llm_cells.get((provider, model))
            if cells is None:
                if len(self._llm_cells) >= MAX_SERIES:
                    self._llm_cells.clear()
                cells = self._llm_cells[(provider, model)] = self._make_llm_cells(provider, model)
            calls, t_in, t_out, usd, hist = cells
            calls[0] += 1
            if isinstance(tokens_in, (int, float)):
                t_in[0] += float(tokens_in)
            if isinstance(tokens_out, (int, float)):
                t_out[0] += float(tokens_out)
            if isinstance(cost, (int, float)):
                usd[0] += float(cost)
            if isinstance(ms, (int, float)):
                seconds = ms / 1000
                hist[0][bisect.bisect_left(METRICS["gofannon_llm_call_duration_seconds"][3], seconds)] += 1
                hist[1] += seconds

    def _make_llm_cells(self, provider: str, model: str) -> tuple[Any, ...]:
        return (self._cell("gofannon_llm_calls", (provider, model, "success")),
                self._cell("gofannon_llm_tokens", (provider, model, "input")),
                self._cell("gofannon_llm_tokens", (provider, model, "output")),
                self._cell("gofannon_llm_cost_usd", (provider, model)),
                self._histogram("gofannon_llm_call_duration_seconds", (provider,)))

    def count_failure(self, route: str, status: int) -> None:
        if status == 401:
            self.inc("gofannon_login_failures", ("unauthorized",))
        elif route.startswith("/auth/callback/"):
            self.inc("gofannon_login_failures", ("login_callback",))

    def _request_cells(self, route: str, method: str, status: int) -> tuple[list[float], list[Any]]:
        """The counter cell and histogram entry of a new (route, method, status), shared with ``series``."""
        with self.lock:
            cells = self._cells[(route, method, status)] = (
                self._cell("gofannon_http_requests", (route, method, str(status))),
                self._histogram("gofannon_http_request_duration_seconds", (route, method)))
            return cells

    def snapshot(self) -> tuple[dict[str, dict[tuple[str, ...], Any]], int]:
        """A copy of every series: counters as floats, histograms as [bucket counts, sum]."""
        def value(v: Any) -> Any:
            if isinstance(v, list):
                return v[0] if len(v) == 1 else [list(v[0]), v[1]]
            return v

        with self.lock:
            copy = {name: {k: value(v) for k, v in list(series.items())} for name, series in self.series.items()}
            return copy, self.in_flight


class MultiprocessSink(LocalSink):
    """prometheus_client metrics in multiprocess mode: every process writes its own files in
    ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any one of them sums all (``livesum`` for in-flight)."""

    def __init__(self) -> None:
        super().__init__()
        from prometheus_client import Counter, Gauge, Histogram

        self.metrics: dict[str, Any] = {}
        for name, (kind, doc, labels, buckets) in METRICS.items():
            if kind == "counter":
                self.metrics[name] = Counter(name, doc, labels, registry=None)
            elif kind == "histogram":
                self.metrics[name] = Histogram(name, doc, labels, buckets=buckets, registry=None)
            else:
                self.metrics[name] = Gauge(name, doc, labels, registry=None, multiprocess_mode="livesum")
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}

    def _child(self, name: str, labels: tuple[str, ...]) -> Any:
        child = self._children.get((name, labels))
        if child is None:
            with self.lock:
                known = self.series[name]
                if labels not in known and len(known) >= MAX_SERIES:
                    labels = tuple(OTHER for _ in labels)
                known[labels] = True
            metric = self.metrics[name]
            child = self._children[(name, labels)] = metric.labels(*labels) if labels else metric
        return child

    def inc(self, name: str, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        self._child(name, labels).inc(amount)

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._child(name, labels).observe(value)

    def timer(self, name: str, labels: tuple[str, ...]) -> Callable[[float], None]:
        return self._child(name, labels).observe  # type: ignore[no-any-return]

    def llm_call(self, provider: str, model: str, tokens_in: Any, tokens_out: Any, cost: Any, ms: Any) -> None:
        self.inc("gofannon_llm_calls", (provider, model, "success"))
        for value, label in ((tokens_in, "input"), (tokens_out, "output")):
            if isinstance(value, (int, float)):
                self.inc("gofannon_llm_tokens", (provider, model, label), float(value))
        if isinstance(cost, (int, float)):
            self.inc("gofannon_llm_cost_usd", (provider, model), float(cost))
        if isinstance(ms, (int, float)):
            self.observe("gofannon_llm_call_duration_seconds", (provider,), ms / 1000)

    def started(self, request: Any) -> None:
        self.metrics["gofannon_http_requests_in_flight"].inc()

    def finished(self, state: Any, route: str, method: str, status: int, seconds: float) -> None:
        self.metrics["gofannon_http_requests_in_flight"].dec()
        self._child("gofannon_http_requests", (route, method, str(status))).inc()
        self._child("gofannon_http_request_duration_seconds", (route, method)).observe(seconds)
        if status >= 400:
            self.count_failure(route, status)


class Stats:
    """The process's metrics: inactive (events ignored) until ``activate`` picks a sink."""

    def __init__(self) -> None:
        self.sink: LocalSink | None = None
        self._lock = threading.Lock()

    @property
    def multiprocess(self) -> bool:
        return isinstance(self.sink, MultiprocessSink)

    def activate(self) -> LocalSink:
        with self._lock:
            if self.sink is None:
                self.sink = MultiprocessSink() if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else LocalSink()
            return self.sink

    def event(self, event: dict[str, Any]) -> None:
        sink = self.sink
        if sink is None:
            return
        kind = event.get("eventType")
        md = event.get("metadata") or {}
        if kind == "llm_request":
            provider, model = _llm_labels(md)
            sink.llm_call(provider, model, md.get("inputTokens"), md.get("outputTokens"), md.get("cost"),
                          md.get("durationMs"))
        elif kind in _LLM_FAILURES:
            sink.inc("gofannon_llm_calls", (*_llm_labels(md), _LLM_FAILURES[kind]))
        elif kind == "job_finished":
            job, outcome = _label(md.get("job"), 40), _label(md.get("outcome"), 40)
            seconds = float(md.get("durationMs") or 0) / 1000
            sink.inc("gofannon_jobs", (job, outcome))
            sink.observe("gofannon_job_duration_seconds", (job,), seconds)
            if job == "chat":
                sink.inc("gofannon_chat_tickets", (outcome,))
                sink.observe("gofannon_chat_ticket_duration_seconds", (outcome,), seconds)
        elif kind == "agent_run_finished":
            outcome = _label(md.get("outcome"), 40)
            sink.inc("gofannon_agent_runs", (outcome,))
            sink.observe("gofannon_agent_run_duration_seconds", (outcome,), float(md.get("durationMs") or 0) / 1000)
        elif kind == "budget_refused":
            sink.inc("gofannon_budget_refusals")
        elif kind == "admin_password_rejected":
            sink.inc("gofannon_login_failures", ("admin_password",))


STATS = Stats()

#: Document-store methods that are timed (the DocumentStore protocol's data operations).
_TIMED = ("get", "get_many", "put", "put_many", "delete", "delete_many", "list", "find", "count", "update",
          "collections")


class StoreTimer:
    """Wraps the kernel's document store and times each operation; every other attribute is read from
    the store itself (so code that needs the backend's own attributes still finds them)."""

    def __init__(self, store: Any, backend: str) -> None:
        self._store = store
        self._backend = _label(backend, 40)
        for op in _TIMED:
            method = getattr(store, op, None)
            if method is not None and inspect.iscoroutinefunction(method):
                setattr(self, op, self._timed(op, method))

    def _timed(self, op: str, method: Any) -> Any:
        observe = STATS.activate().timer("gofannon_store_operation_duration_seconds", (self._backend, op))
        clock = time.perf_counter

        async def timed(*args: Any, **kw: Any) -> Any:
            started = clock()
            try:
                return await method(*args, **kw)
            finally:
                observe(clock() - started)

        timed.__name__ = op
        return timed

    def stamp(self, collection: str, doc_id: str) -> Any:
        return self._store.stamp(collection, doc_id)  # not timed: a memory read; named here to skip __getattr__

    async def require(self, collection: str, doc_id: str) -> Any:
        from gofannon.errors import DocumentNotFound

        doc = await self.get(collection, doc_id)  # type: ignore[attr-defined]
        if doc is None:
            raise DocumentNotFound(collection, doc_id)
        return doc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
