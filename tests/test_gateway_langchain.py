"""LangChain's ``ChatOpenAI`` pointed at the kernel (docs/gateway.md shows it): a real third-party client that
builds its own request bodies, through the official SDK underneath."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import Reply
from pydantic import BaseModel
from test_gateway_openai import MODEL, PRICE_IN, PRICE_OUT, Gateway, gw  # noqa: F401 - gw is a fixture


def chat_model(gw: Gateway, **kw: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=gw.base_url, api_key=gw.token, max_retries=0, **kw)


async def test_langchain_invokes_and_streams_through_the_kernel_and_each_call_is_charged(gw: Gateway) -> None:
    before = (await gw.user())["usageInfo"]["spendRemaining"]
    gw.fake.script(Reply("Hello from behind the gateway", input_tokens=3, output_tokens=4))
    answer = await chat_model(gw).ainvoke("Hello")
    assert answer.content == "Hello from behind the gateway"
    assert answer.response_metadata["token_usage"]["total_tokens"] == 7
    assert gw.fake.requests[-1].json["messages"] == [{"role": "user", "content": "Hello"}]

    gw.fake.script(Reply("streamed to LangChain", input_tokens=2, output_tokens=3))
    chunks = [c async for c in chat_model(gw, stream_usage=True).astream("Hello again")]
    assert "".join(str(c.content) for c in chunks) == "streamed to LangChain"
    assert sum((c.usage_metadata or {}).get("output_tokens", 0) for c in chunks) == 3

    after = (await gw.user())["usageInfo"]["spendRemaining"]
    assert before - after == pytest.approx(5 * PRICE_IN + 7 * PRICE_OUT)
    assert [e["metadata"]["outputTokens"] for e in (await gw.usage())[-2:]] == [4, 3]


async def test_langchain_tool_calling_round_trip(gw: Gateway) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        return "sunny"

    gw.fake.script(Reply("", tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Oslo"}}]),
                   Reply("It is sunny in Oslo."))
    model = chat_model(gw).bind_tools([get_weather])
    asked = [HumanMessage("Weather in Oslo?")]
    call = await model.ainvoke(asked)
    assert call.tool_calls == [{"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_w1",
                                "type": "tool_call"}]
    assert gw.fake.requests[-1].json["tools"][0]["function"]["name"] == "get_weather"
    final = await model.ainvoke([*asked, call, ToolMessage(content="sunny", tool_call_id="call_w1")])
    assert final.content == "It is sunny in Oslo."
    sent = gw.fake.requests[-1].json["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}


async def test_langchain_structured_output_uses_json_schema(gw: Gateway) -> None:
    class City(BaseModel):
        name: str
        country: str

    gw.fake.script(Reply('{"name": "Oslo", "country": "Norway"}'))
    city = await chat_model(gw).with_structured_output(City).ainvoke("The capital of Norway?")
    assert city == City(name="Oslo", country="Norway")
    fmt = gw.fake.requests[-1].json["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["name", "country"]
