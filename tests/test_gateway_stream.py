"""``/v1`` streaming against a vendor that streams on the test's command: the first chunk reaches the client
while the vendor is still answering, a client that hangs up stops the vendor's stream, and a vendor that
fails mid-stream ends the stream with an error event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Client, free_port
from test_gateway_openai import Gateway, make_token
from yarl import URL

from gofannon.app import create_app

MODEL = "live/m"


class StreamingVendor:
    """An OpenAI-compatible server whose stream sends its first piece, then waits for ``more`` (the test says
    when) and sends the rest, or fails when told to. ``dropped`` is set when its client went away."""

    def __init__(self) -> None:
        self.more = asyncio.Event()
        self.fail_midway = False
        self.trickle = False
        self.burst_then_fail: list[str] = []  # pieces sent at once after the first, then the vendor dies
        self.silent = False  # sends nothing until ``more`` (a client may hang up before any text)
        self.started = asyncio.Event()
        self.dropped = asyncio.Event()
        self.finished = asyncio.Event()
        self.port = 0
        self._server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> None:
            chunk: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                chunk["choices"], chunk["usage"] = [], usage
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        self.started.set()
        if self.silent:
            try:
                await self.more.wait()
            except (asyncio.CancelledError, ConnectionError):
                self.dropped.set()
                raise
        if self.burst_then_fail:  # everything in one write, the connection closed right after it
            self.burst_then_fail.insert(0, "first ")
            chunks = [{"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
                      for p in self.burst_then_fail]
            events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b'data: {"error": {"message": "the vendor is overloaded", "type": "server_error"}}\n\n']
            request.transport.write(b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events))  # type: ignore
            request.transport.close()  # type: ignore[union-attr]
            return resp
        await send({"role": "assistant", "content": ""})
        await send({"content": "first "})
        # Wait for the test's signal, noticing a client that went away meanwhile.
        try:
            while self.trickle:  # keeps streaming, so the kernel's next write to the gone client fails
                await asyncio.sleep(0.01)
                await send({"content": "."})
            await self.more.wait()
        except (asyncio.CancelledError, ConnectionError):  # the test server cancels a handler whose client left
            self.dropped.set()
            raise
        if self.fail_midway:
            request.transport.close()  # type: ignore[union-attr] - a vendor dying mid-answer
            return resp
        await send({"content": "second"})
        await send({}, "stop")
        await send({}, None, {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        await resp.write(b"data: [DONE]\n\n")
        self.finished.set()
        return resp

    async def __aenter__(self) -> "StreamingVendor":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self._server = TestServer(app, host="127.0.0.1", port=free_port())
        await self._server.start_server()
        self.port = self._server.port  # type: ignore[assignment]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.close()


@pytest.fixture
async def vendor() -> AsyncIterator[StreamingVendor]:
    async with StreamingVendor() as v:
        yield v


def live_env(vendor: StreamingVendor, tmp_path: Path) -> dict[str, str]:
    conf = tmp_path / "conf"
    (conf / "catalog").mkdir(parents=True, exist_ok=True)
    (conf / "catalog" / "live.json").write_text(json.dumps({
        "slug": "live", "plugin": "openai_compat", "base_url": f"http://127.0.0.1:{vendor.port}/v1",
        "models": {"m": {"pricing": {"input_cost_per_token": 0.01, "output_cost_per_token": 0.02}}}}))
    return {"GOFANNON_CONFIG_DIR": str(conf), "GOFANNON_STORAGE": "memory", "LLM_RATE_LIMIT_RETRIES": "0"}


@pytest.fixture
async def live(serve: Any, vendor: StreamingVendor, tmp_path: Path) -> Gateway:
    client = await serve(**live_env(vendor, tmp_path))
    await client.login("alice")
    return Gateway(client, await make_token(client), None)  # type: ignore[arg-type]


@pytest.fixture(params=["test_server", "as_the_cli_serves"])
async def either(request: pytest.FixtureRequest, serve: Any, make_settings: Any, vendor: StreamingVendor,
                 tmp_path: Path) -> AsyncIterator[Gateway]:
    """The kernel behind aiohttp's test server, which cancels a handler whose client went away, and served
    as ``gofannon serve`` serves it, where aiohttp does not (the kernel must notice by itself)."""
    if request.param == "test_server":
        client = await serve(**live_env(vendor, tmp_path))
        await client.login("alice")
        yield Gateway(client, await make_token(client), None)  # type: ignore[arg-type]
        return
    app = create_app(make_settings(**live_env(vendor, tmp_path)))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = SimpleNamespace(make_url=lambda path: URL(f"http://127.0.0.1:{port}{path}"))
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    client = Client(server, session)  # type: ignore[arg-type]
    try:
        await client.login("alice")
        yield Gateway(client, await make_token(client), None)  # type: ignore[arg-type]
    finally:
        await session.close()
        await runner.cleanup()


async def test_the_first_chunk_arrives_while_the_vendor_is_still_answering(live: Gateway,
                                                                          vendor: StreamingVendor) -> None:
    stream = await live.sdk().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}],
                                                       stream=True)
    texts = []
    async for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text and not texts:
            assert not vendor.finished.is_set()  # the vendor is holding the rest of its answer
            vendor.more.set()
        if text:
            texts.append(text)
    assert texts == ["first ", "second"]
    assert vendor.finished.is_set()
    history = await live.usage()
    assert history[-1]["responseCost"] == pytest.approx(5 * 0.01 + 2 * 0.02)


@pytest.mark.parametrize("trickle", [False, True], ids=["vendor_waiting", "vendor_streaming"])
async def test_a_client_that_hangs_up_stops_the_vendor_stream_and_pays_for_what_it_got(
        either: Gateway, vendor: StreamingVendor, trickle: bool) -> None:
    live = either
    vendor.trickle = trickle
    async with aiohttp.ClientSession() as http:
        resp = await http.post(live.client.url("/v1/chat/completions"), headers={
            "Authorization": f"Bearer {live.token}"}, json={
            "model": MODEL, "messages": [{"role": "user", "content": "go"}], "stream": True})
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        async for line in resp.content:
            if b'"content":"first "' in line:
                break
        resp.close()  # the client hangs up (closes its connection) with the vendor still answering
    await asyncio.wait_for(vendor.dropped.wait(), 10)
    assert not vendor.finished.is_set()
    for _ in range(100):  # the estimate is charged once the kernel has noticed
        history = await live.usage()
        if history:
            break
        await asyncio.sleep(0.05)
    assert history[-1]["metadata"]["streamAbandoned"] is True and history[-1]["responseCost"] > 0
    await asyncio.sleep(0.3)  # anything billed twice would have landed by now
    assert len([h for h in await live.usage() if h["metadata"].get("streamAbandoned")]) == 1


async def test_a_vendor_failing_mid_stream_ends_it_with_an_error_event(live: Gateway,
                                                                       vendor: StreamingVendor) -> None:
    vendor.fail_midway = True
    texts, err = await texts_until_error(live, on_text=vendor.more.set)
    assert texts == ["first "]
    assert "live" in err.message
    assert err.body["type"] == "server_error"  # type: ignore[index]


async def texts_until_error(live: Gateway, on_text: Any = None) -> tuple[list[str], openai.APIError]:
    """The text pieces of a streamed call through the official SDK, and the error that ended it (there must be
    one); ``on_text`` is called after each piece."""
    stream = await live.sdk().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}],
                                                       stream=True)
    texts: list[str] = []
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
                if on_text is not None:
                    on_text()
    return texts, err.value


async def test_pieces_that_arrived_before_the_vendor_failed_reach_the_client_before_the_error(
        live: Gateway, vendor: StreamingVendor) -> None:
    """The vendor sent several pieces and then an error event, all at once: every piece it sent is the caller's
    (it is billed for them), then the error event with the vendor's message."""
    vendor.burst_then_fail = ["alpha ", "beta ", "gamma"]
    texts, err = await texts_until_error(live)
    assert "".join(texts) == "first alpha beta gamma"
    assert "the vendor is overloaded" in err.message


async def test_a_client_that_hangs_up_before_any_text_is_not_charged(either: Gateway,
                                                                      vendor: StreamingVendor) -> None:
    vendor.silent = True
    async with aiohttp.ClientSession() as http:
        request = asyncio.ensure_future(http.post(either.client.url("/v1/chat/completions"), headers={
            "Authorization": f"Bearer {either.token}"}, json={
            "model": MODEL, "messages": [{"role": "user", "content": "go"}], "stream": True}))
        await asyncio.wait_for(vendor.started.wait(), 10)
        request.cancel()  # the client goes away while the vendor has not said a word
        await asyncio.gather(request, return_exceptions=True)
    await asyncio.wait_for(vendor.dropped.wait(), 10)
    await asyncio.sleep(0.3)  # a charge would have landed by now
    assert await either.usage() == []
