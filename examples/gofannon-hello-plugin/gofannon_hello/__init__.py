"""An example Gofannon plugin: the ``hello`` provider and ``GET /hello``.

Only the hook implementations live at module level; everything else is imported when first used,
so installing the plugin costs the kernel's start-up nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from gofannon import hookimpl

__version__ = "0.1.0"


class HelloProvider:
    """A provider that needs no key and no network: it greets the last user message."""

    slug = "hello"

    def catalog(self, settings: Any) -> dict[str, dict[str, Any]]:
        return {
            "hello": {
                "models": {
                    "hello-1": {"parameters": {}, "description": "Greets you back; for trying the plugin story"}
                }
            }
        }

    @staticmethod
    def _greeting(call: Any) -> str:
        users = [m for m in call.messages if m.get("role") == "user"]
        text = str(users[-1].get("content", "")) if users else "world"
        return f"Hello, {text}!"

    async def complete(self, call: Any) -> Any:
        from gofannon.llm import Completion, Usage

        text = self._greeting(call)
        return Completion(content=text, usage=Usage(input_tokens=len(call.messages), output_tokens=len(text.split())),
                          finish_reason="stop")

    async def stream(self, call: Any) -> Any:
        from gofannon.llm import StreamEvent

        completion = await self.complete(call)
        yield StreamEvent(kind="content", text=completion.content)
        yield StreamEvent(kind="done", completion=completion)


async def hello(request: Any) -> Any:
    from aiohttp import web

    return web.json_response({"hello": "world", "plugin": "gofannon-hello-plugin"})


@hookimpl
def register_providers(register: Callable[..., None], settings: Any) -> None:
    register(HelloProvider())


@hookimpl
def register_routes(register: Callable[..., None], settings: Any) -> None:
    register("GET", "/hello", hello, public=True)
