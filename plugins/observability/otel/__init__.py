"""Plugin ``otel``: OpenTelemetry traces (install the extra: ``pip install 'gofannon[otel]'``).

On when the SDK is installed, ``OTEL_SDK_DISABLED`` is not true, and an exporter is configured the
standard way: ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP),
or ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``; ``none`` turns tracing off). The other ``OTEL_*``
variables (service name, resource attributes, headers, sampler, batch delays) are read by the SDK.
The decision is made when the plugin is loaded, from the process environment, so API processes and
``gofannon worker`` processes alike trace; the SDK itself is imported on the first span.

Spans: one per HTTP request (a server span named ``METHOD /route/{template}``, continuing an incoming
``traceparent``), one per job (its context travels with the job to a worker, so the worker's spans join
the request's trace), one per agent run, and one per LLM call with the GenAI semantic conventions
(``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``).
Prompts and answers are not put on spans unless the operator sets the standard
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``: then an LLM span also carries
``gen_ai.input.messages`` and ``gen_ai.output.messages`` (JSON, each cut at ``CONTENT_LIMIT`` characters).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from gofannon import hookimpl
from gofannon.observability import LLM_CONTENT, TRACERS

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

log = logging.getLogger("gofannon.otel")

_TRUE = {"1", "true", "yes", "on"}
_LLM_FAILURES = {"llm_request_failed", "invalid_api_key", "context_window_exceeded"}
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONTENT_LIMIT = 16_384


def wanted(environ: Mapping[str, str]) -> bool:
    """Tracing is on: the SDK is installed, not disabled, and an exporter is configured."""
    if str(environ.get("OTEL_SDK_DISABLED", "")).strip().lower() in _TRUE:
        return False
    exporter = str(environ.get("OTEL_TRACES_EXPORTER", "")).strip().lower()
    if exporter == "none":
        return False
    if not (exporter or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    return importlib.util.find_spec("opentelemetry.sdk") is not None


class _Handle:
    """``gofannon.observability.SpanHandle`` over an OpenTelemetry span."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def error(self, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_status(Status(StatusCode.ERROR, message))


class OtelTracer:
    """The kernel's tracer (``gofannon.observability.Tracer``) and the middleware's request observer.

    ``provider`` is an SDK ``TracerProvider``; without one, the first span builds it from the
    environment (a batch processor and the configured exporter)."""

    def __init__(self, provider: Any = None, *, capture_content: bool | None = None) -> None:
        self._provider = provider
        if capture_content is None:
            capture_content = str(os.environ.get(CAPTURE_CONTENT_ENV, "")).strip().lower() in _TRUE
        self.capture_content = capture_content
        self._tracer: Any = None
        self._lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------------------------------
    def tracer(self) -> Any:
        if self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    if self._provider is None:
                        self._provider = _provider_from_env()
                    self._tracer = self._provider.get_tracer("gofannon")
        return self._tracer

    # -- gofannon.observability.Tracer ------------------------------------------------------------------------
    @contextmanager
    def span(self, name: str, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None) -> Iterator[_Handle]:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(dict(carrier)) if carrier else None
        with self.tracer().start_as_current_span(name, context=parent, attributes=_clean(attributes)) as span:
            yield _Handle(span)

    def carrier(self) -> dict[str, str]:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        out: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(out)
        return out

    # -- gofannon.web.middleware.RequestObserver --------------------------------------------------------------
    def started(self, request: "web.Request") -> Any:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        headers = request.headers
        incoming = {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
        parent = TraceContextTextMapPropagator().extract(incoming) if incoming else None
        from gofannon.observability import current_request_id

        span = self.tracer().start_span(request.method, context=parent, kind=trace.SpanKind.SERVER, attributes={
            "http.request.method": request.method, "url.path": request.path, "url.scheme": request.scheme,
            "gofannon.request_id": current_request_id() or "",
        })
        return span, context.attach(trace.set_span_in_context(span))

    def finished(self, state: Any, route: str, method: str, status: int, seconds: float) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        span, token = state
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        context.detach(token)

    # -- LLM calls, from their events ----------------------------------------------------------------------
    def llm_span(self, event: dict[str, Any]) -> None:
        """A client span for one LLM call, child of whatever span is current where it was recorded (the
        request, the job, the agent run). It is made from the call's event, so it starts ``durationMs``
        before the event and carries only counts, never the prompt or the answer."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        md = event.get("metadata") or {}
        provider, model = str(md.get("provider") or "unknown"), str(md.get("model") or "unknown")
        end = time.time_ns()
        duration = md.get("durationMs")
        start = end - int(float(duration) * 1e6) if isinstance(duration, (int, float)) else end
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.system": provider,
                                      "gen_ai.request.model": model, "gen_ai.response.model": model}
        for field, key in (("inputTokens", "gen_ai.usage.input_tokens"), ("outputTokens", "gen_ai.usage.output_tokens")):
            if isinstance(md.get(field), (int, float)):
                attributes[key] = int(md[field])
        if isinstance(md.get("cost"), (int, float)):
            attributes["gofannon.llm.cost_usd"] = float(md["cost"])
        captured = LLM_CONTENT.get() if self.capture_content else None
        if captured is not None:
            messages, answer = captured
            attributes["gen_ai.input.messages"] = _json_cut(messages)
            attributes["gen_ai.output.messages"] = _json_cut([{"role": "assistant", **answer}])
        span = self.tracer().start_span(f"chat {model}", kind=trace.SpanKind.CLIENT, start_time=start,
                                        attributes=attributes)
        if event.get("eventType") in _LLM_FAILURES:
            span.set_attribute("error.type", str(event["eventType"]))
            span.set_status(Status(StatusCode.ERROR, str(event.get("message") or "")[:200]))
        span.end(end_time=end)


def _json_cut(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "...(cut)"


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, bool, int, float)) else str(v)) for k, v in attributes.items() if v is not None}


def _provider_from_env() -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "gofannon"})
    provider = TracerProvider(resource=resource)
    kind = (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    for name in (part.strip() for part in kind.split(",") if part.strip()):
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter: Any = ConsoleSpanExporter()
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s: unknown exporter (use otlp or console); ignored", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def install(tracer: OtelTracer) -> OtelTracer:
    """Make ``tracer`` the kernel's tracer (tests install one with an in-memory exporter)."""
    TRACERS[:] = [tracer]
    return tracer


def uninstall() -> None:
    TRACERS[:] = [t for t in TRACERS if not isinstance(t, OtelTracer)]


def active() -> OtelTracer | None:
    return next((t for t in TRACERS if isinstance(t, OtelTracer)), None)


@hookimpl
def gofannon_startup(app: "web.Application") -> None:
    tracer = active()
    if tracer is None or app is None:
        return
    from gofannon.web.middleware import REQUEST_OBSERVERS

    app[REQUEST_OBSERVERS].append(tracer)


@hookimpl
def record_event(event: dict[str, Any]) -> None:
    tracer = active()
    if tracer is not None and (event.get("eventType") == "llm_request" or event.get("eventType") in _LLM_FAILURES):
        tracer.llm_span(event)


if wanted(os.environ) and active() is None:
    install(OtelTracer())
