"""simonw/llm's CLI pointed at the kernel through ``extra-openai-models.yaml``: a real third-party client."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from fakes import Reply
from test_gateway_openai import MODEL, Gateway, gw  # noqa: F401 - gw is a fixture

LLM = Path(sys.executable).with_name("llm")


async def run_llm(gw: Gateway, user_path: Path, *args: str) -> tuple[int, str, str]:
    (user_path / "extra-openai-models.yaml").write_text(
        f"- model_id: gofannon-chat\n"
        f"  model_name: {MODEL}\n"
        f"  api_base: \"{gw.base_url}\"\n"
        f"  api_key_name: gofannon\n")
    (user_path / "keys.json").write_text(json.dumps({"gofannon": gw.token}))
    env = {**os.environ, "LLM_USER_PATH": str(user_path)}
    env.pop("OPENAI_API_KEY", None)
    proc = await asyncio.create_subprocess_exec(str(LLM), *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("stream", [True, False])
async def test_llm_cli_prompts_a_model_through_the_kernel(gw: Gateway, tmp_path: Path, stream: bool) -> None:
    if not LLM.exists():
        pytest.fail("the llm CLI is not installed: pip install -e '.[test]'")
    gw.fake.script(Reply("Greetings from behind the gateway", input_tokens=4, output_tokens=6))
    args = ["prompt", "-m", "gofannon-chat", "say hello", *([] if stream else ["--no-stream"])]
    code, out, err = await run_llm(gw, tmp_path, *args)
    assert code == 0, err
    assert out.strip() == "Greetings from behind the gateway"
    sent = gw.fake.requests[-1].json
    assert sent["model"] == "chat-1" and sent["messages"][-1]["content"] == "say hello"
    history = await gw.usage()
    assert history[-1]["metadata"]["outputTokens"] == 6


async def test_llm_cli_reports_a_refused_model(gw: Gateway, tmp_path: Path) -> None:
    async with gw.client.post("/users/me/tokens", json={"name": "narrow", "models": ["agent/*"]}) as r:
        gw.token = (await r.json())["token"]
    code, out, err = await run_llm(gw, tmp_path, "prompt", "-m", "gofannon-chat", "hi", "--no-stream")
    assert code != 0 and "may not use the model 'fake/chat-1'" in err
    assert not gw.fake.requests
