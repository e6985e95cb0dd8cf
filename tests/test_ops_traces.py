"""OpenTelemetry traces: spans read back through the SDK's in-memory exporter, and, across processes,
through a local OTLP/HTTP receiver — one trace from the API through an RQ worker and the sandbox to the
LLM call."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import free_port
from fakes import FakeLLMServer, Reply
from gofannon_plugins.observability import otel
from test_chat_tickets import wait_ticket

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
PROMPT = "the secret plans for tuesday"

AGENT = '''
from services.llm_service import call_llm

async def run(input_dict, tools):
    content, thoughts = await call_llm(provider="openai", model="gpt-4o",
                                       messages=[{"role": "user", "content": input_dict["inputText"]}])
    return {"outputText": content}
'''


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The otel plugin installed with an in-memory exporter for this test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.install(otel.OtelTracer(provider))
    try:
        yield exporter
    finally:
        otel.uninstall()
        provider.shutdown()


def by_name(finished: Any, name: str) -> Any:
    matching = [s for s in finished if s.name == name]
    assert matching, f"no span {name!r} among {[s.name for s in finished]}"
    return matching[-1]


def no_prompt_anywhere(attribute_values: list[Any]) -> None:
    assert not any(PROMPT in str(v) for v in attribute_values)


async def test_a_request_its_job_and_its_llm_call_are_one_trace(serve: Any, fake_openai: FakeLLMServer,
                                                                 spans: InMemorySpanExporter) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    fake_openai.script(Reply("an answer", input_tokens=123, output_tokens=45))
    body = {"messages": [{"role": "user", "content": PROMPT}], "provider": "openai", "model": "gpt-4o"}
    async with client.post("/chat", json=body, headers={"traceparent": TRACEPARENT}) as r:
        assert r.status == 200
        request_id = r.headers["X-Request-Id"]
        ticket = (await r.json())["ticket_id"]
    assert (await wait_ticket(client, ticket))["status"] == "completed"
    finished = spans.get_finished_spans()
    http = by_name(finished, "POST /chat")
    assert format(http.context.trace_id, "032x") == TRACE_ID  # the incoming traceparent is honoured
    assert format(http.parent.span_id, "016x") == PARENT_ID
    assert http.attributes["http.route"] == "/chat" and http.attributes["http.response.status_code"] == 200
    assert http.attributes["gofannon.request_id"] == request_id
    job = by_name(finished, "job chat")
    assert job.parent.span_id == http.context.span_id and job.attributes["gofannon.job.outcome"] == "completed"
    llm = by_name(finished, "chat gpt-4o")
    assert llm.parent.span_id == job.context.span_id and llm.context.trace_id == http.context.trace_id
    assert llm.attributes["gen_ai.system"] == "openai" and llm.attributes["gen_ai.request.model"] == "gpt-4o"
    assert llm.attributes["gen_ai.usage.input_tokens"] == 123 and llm.attributes["gen_ai.usage.output_tokens"] == 45
    assert llm.end_time >= llm.start_time
    no_prompt_anywhere([v for s in finished for v in s.attributes.values()])
    # a route template names the span, never the raw path
    async with client.get("/agents/not-an-agent") as r:
        assert r.status == 404
    assert by_name(spans.get_finished_spans(), "GET /agents/{agent_id}").attributes["url.path"] == "/agents/not-an-agent"


async def test_an_agent_run_and_the_llm_call_its_code_makes_nest_under_the_request(
        serve: Any, fake_openai: FakeLLMServer, spans: InMemorySpanExporter) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    fake_openai.script(Reply("from the model", input_tokens=7, output_tokens=3))
    body = {"code": AGENT, "inputDict": {"inputText": PROMPT}, "tools": {}, "gofannonAgents": []}
    async with client.post("/agents/run-code", json=body) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["result"] == {"outputText": "from the model"}
    finished = spans.get_finished_spans()
    http = by_name(finished, "POST /agents/run-code")
    job = by_name(finished, "job agent_run")
    run = by_name(finished, "agent run")
    llm = by_name(finished, "chat gpt-4o")
    assert job.parent.span_id == http.context.span_id
    assert run.parent.span_id == job.context.span_id and run.attributes["gofannon.run.outcome"] == "success"
    assert llm.context.trace_id == http.context.trace_id
    assert llm.start_time >= run.start_time and llm.end_time <= run.end_time
    broker = by_name(finished, "broker llm.call")  # the agent code's request to the platform
    assert broker.context.trace_id == http.context.trace_id and llm.parent.span_id == broker.context.span_id
    no_prompt_anywhere([v for s in finished for v in s.attributes.values()])


class OtlpReceiver:
    """A local OTLP/HTTP trace receiver: what exporters POST to ``/v1/traces``, decoded."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []  # (service.name, span)

    async def handle(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield receiver, str(server.make_url(""))
    finally:
        await server.close()


async def test_one_trace_spans_the_api_an_rq_worker_the_sandbox_and_the_llm_call(
        serve: Any, rq_worker: Any, fake_openai: FakeLLMServer, spans: InMemorySpanExporter,
        otlp_receiver: tuple[OtlpReceiver, str]) -> None:
    receiver, url = otlp_receiver
    # The worker traces because of the standard variables alone, and exports over OTLP/HTTP.
    env = rq_worker(OTEL_EXPORTER_OTLP_ENDPOINT=url.rstrip("/"), OTEL_SERVICE_NAME="gofannon-worker",
                    OTEL_BSP_SCHEDULE_DELAY="50", **fake_openai.env)
    client = await serve(**env)
    await client.login("alice")
    agent = {"name": "asker", "description": "Asks the model", "code": AGENT, "friendlyName": "asker"}
    async with client.post("/agents", json=agent) as r:
        agent_id = (await r.json())["_id"]
    async with client.post(f"/agents/{agent_id}/deploy") as r:
        assert r.status == 201, await r.text()
    fake_openai.script(Reply("deep answer", input_tokens=11, output_tokens=22))
    body = {"messages": [{"role": "user", "content": PROMPT}], "provider": "gofannon", "model": "asker"}
    async with client.post("/chat", json=body, headers={"traceparent": TRACEPARENT}) as r:
        assert r.status == 200
        ticket = (await r.json())["ticket_id"]
    done = await wait_ticket(client, ticket, attempts=1500)
    assert done["status"] == "completed" and done["result"]["content"] == "deep answer", done
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not {"job chat", "agent run", "broker llm.call", "chat gpt-4o"} <= {
            s.name for _, s in receiver.spans}:
        await asyncio.sleep(0.1)  # the worker exports in batches, inner spans first
    api_span = by_name(spans.get_finished_spans(), "POST /chat")
    worker = {span.name: span for service, span in receiver.spans
              if service == "gofannon-worker" and span.trace_id.hex() == TRACE_ID}
    assert {"job chat", "agent run", "broker llm.call", "chat gpt-4o"} <= set(worker), \
        [s.name for _, s in receiver.spans]
    assert worker["job chat"].parent_span_id.hex() == format(api_span.context.span_id, "016x")
    assert worker["agent run"].parent_span_id == worker["job chat"].span_id
    llm = worker["chat gpt-4o"]
    assert llm.parent_span_id == worker["broker llm.call"].span_id
    attributes = {a.key: a.value for a in llm.attributes}
    assert attributes["gen_ai.system"].string_value == "openai"
    assert attributes["gen_ai.usage.input_tokens"].int_value == 11
    assert attributes["gen_ai.usage.output_tokens"].int_value == 22
    assert llm.start_time_unix_nano >= worker["agent run"].start_time_unix_nano
    no_prompt_anywhere([a.value for _, s in receiver.spans for a in s.attributes])


def test_tracing_turns_on_only_with_an_exporter_and_not_when_disabled() -> None:
    assert not otel.wanted({})
    assert otel.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert otel.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not otel.wanted({"OTEL_TRACES_EXPORTER": "none"})
    assert not otel.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"})


async def test_prompts_and_answers_are_on_llm_spans_only_when_the_operator_asks(serve: Any, fake_openai: FakeLLMServer,
                                                                              spans: InMemorySpanExporter) -> None:
    client = await serve(**fake_openai.env)
    await client.login("alice")
    body = {"messages": [{"role": "user", "content": PROMPT}], "provider": "openai", "model": "gpt-4o"}
    tracer = otel.active()
    assert tracer is not None and tracer.capture_content is False  # the default: counts only

    async def one_call(answer: str) -> Any:
        fake_openai.script(Reply(answer))
        async with client.post("/chat", json=body) as r:
            ticket = (await r.json())["ticket_id"]
        assert (await wait_ticket(client, ticket))["status"] == "completed"
        return by_name(spans.get_finished_spans(), "chat gpt-4o")

    plain = await one_call("first answer")
    no_prompt_anywhere(list(plain.attributes.values()))
    assert "gen_ai.input.messages" not in plain.attributes

    tracer.capture_content = True  # what OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true sets
    captured = await one_call("the second answer")
    assert PROMPT in captured.attributes["gen_ai.input.messages"]
    assert "the second answer" in captured.attributes["gen_ai.output.messages"]


async def test_a_v1_calls_llm_span_is_a_child_of_its_request_though_recorded_after_the_answer(
        serve: Any, fake_openai: FakeLLMServer, spans: InMemorySpanExporter) -> None:
    """/v1 records its call's event just after the answer leaves (``record_soon``); the span still nests under the
    request and carries the call's counts, and the content when the operator asks for it."""
    client = await serve(**fake_openai.env)
    await client.login("alice")
    tracer = otel.active()
    assert tracer is not None
    tracer.capture_content = True
    fake_openai.script(Reply("answered fast", input_tokens=11, output_tokens=4))
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": PROMPT}]}
    async with client.post("/v1/chat/completions", json=body, headers={"traceparent": TRACEPARENT}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["choices"][0]["message"]["content"] == "answered fast"
    await asyncio.sleep(0)
    finished = spans.get_finished_spans()
    http = by_name(finished, "POST /v1/chat/completions")
    llm = by_name(finished, "chat gpt-4o")
    assert llm.parent.span_id == http.context.span_id and format(llm.context.trace_id, "032x") == TRACE_ID
    assert llm.attributes["gen_ai.usage.input_tokens"] == 11 and llm.attributes["gen_ai.usage.output_tokens"] == 4
    assert PROMPT in llm.attributes["gen_ai.input.messages"]
    assert "answered fast" in llm.attributes["gen_ai.output.messages"]


def test_the_standard_variable_turns_content_capture_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(otel.CAPTURE_CONTENT_ENV, raising=False)
    assert otel.OtelTracer(TracerProvider()).capture_content is False
    monkeypatch.setenv(otel.CAPTURE_CONTENT_ENV, "true")
    assert otel.OtelTracer(TracerProvider()).capture_content is True
    monkeypatch.setenv(otel.CAPTURE_CONTENT_ENV, "false")
    assert otel.OtelTracer(TracerProvider()).capture_content is False
