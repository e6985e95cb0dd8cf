"""Reading OpenAI's request options and message parts once, for the plugins that translate them to another
vendor (anthropic, gemini, bedrock), and checking them for those that pass them on (``check_openai_options``).

Each helper turns an OpenAI-shaped value into a small vendor-neutral one and answers the two kinds of "no"
the same way everywhere: a malformed value is the caller's mistake (``BadRequest``, 400), a well-formed one the
vendor cannot honour is ``UnsupportedFeature`` (also a 400, naming the provider). Both are raised while the
request body is built, so nothing has been sent or charged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gofannon.errors import BadRequest
from gofannon.llm import UnsupportedFeature, message_text

SYSTEM_ROLES = ("system", "developer")


def _bad(message: str, param: str) -> BadRequest:
    """The caller's mistake in ``param`` (what the OpenAI-compatible API names in its error)."""
    refused = BadRequest(message)
    refused.param = param
    return refused


def system_text(messages: list[dict[str, Any]]) -> str:
    """System and developer messages joined: vendors without a developer role read it as system."""
    return "\n\n".join(t for t in (message_text(m.get("content")) for m in messages if m.get("role") in SYSTEM_ROLES) if t)


def stop_sequences(value: Any) -> list[str] | None:
    """OpenAI's ``stop`` (a string or a list of up to 4 strings) as a list; None when unset or empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value else None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v] or None
    raise _bad("stop must be a string or a list of strings", "stop")


def refuse_blank_stops(provider: str, stops: list[str] | None) -> None:
    """Claude refuses stop sequences made only of whitespace (``"\\n"``); say so before sending."""
    if any(not s.strip() for s in stops or []):
        raise UnsupportedFeature(provider, "stop sequences made only of whitespace")


@dataclass(frozen=True)
class ToolChoice:
    """``mode`` is auto | none | required | function (then ``name`` is the function to call)."""

    mode: str
    name: str | None = None


def tool_choice(value: Any, tools: list[dict[str, Any]] | None) -> ToolChoice | None:
    """OpenAI's ``tool_choice``; None when unset. Forcing a tool without tools is the caller's mistake."""
    if value is None:
        return None
    if isinstance(value, str) and value in ("auto", "none", "required"):
        choice = ToolChoice(value)
    elif isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict) \
            and isinstance(value["function"].get("name"), str) and value["function"]["name"]:
        choice = ToolChoice("function", value["function"]["name"])
    else:
        raise _bad("tool_choice must be 'auto', 'none', 'required' or "
                   "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    names = {fn.get("name") for fn in function_tools(tools)}
    if choice.mode in ("required", "function") and not tools:
        raise _bad(f"tool_choice {value!r} needs tools", "tool_choice")
    if choice.mode == "function" and choice.name not in names:
        raise _bad(f"tool_choice names '{choice.name}', which is not among the tools", "tool_choice")
    return choice


@dataclass(frozen=True)
class ResponseFormat:
    """``kind`` is text | json_object | json_schema (then ``schema``, ``name`` and ``strict``)."""

    kind: str
    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool = False


def response_format(value: Any) -> ResponseFormat | None:
    """OpenAI's ``response_format``; None when unset or ``text`` (the default)."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise _bad("response_format json_schema needs a json_schema object with a 'schema' object",
                       "response_format")
        return ResponseFormat("json_schema", spec.get("schema") or {"type": "object"},
                              str(spec.get("name") or "response"), bool(spec.get("strict")))
    raise _bad("response_format type must be 'text', 'json_object' or 'json_schema'", "response_format")


#: What a vendor without a JSON mode is told when the caller asked for ``json_object``.
JSON_INSTRUCTION = "Answer with a single JSON object and nothing else: no prose, no code fences."


def answer_format(provider: str, fmt: ResponseFormat | None, system: str, *, has_tools: bool,
                  thinking: bool) -> tuple[str, ResponseFormat | None]:
    """How a vendor with tools but no JSON mode follows ``response_format``: (the system text, with the JSON
    instruction for ``json_object``; the ``json_schema`` format to force as the one answer tool, or None). A
    forced answer tool cannot sit beside the caller's tools or extended thinking: refused."""
    if fmt is None:
        return system, None
    if fmt.kind == "json_object":
        return (f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION), None
    if has_tools:
        raise UnsupportedFeature(provider, "response_format json_schema together with tools")
    if thinking:
        raise UnsupportedFeature(provider, "response_format json_schema with reasoning_effort (extended "
                                           "thinking cannot be combined with a forced tool)")
    return system, fmt


def function_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The ``function`` objects of OpenAI function tools (built-in vendor tools are left out)."""
    return [t["function"] for t in tools or [] if t.get("type") == "function" and isinstance(t.get("function"), dict)]


def arguments(text: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON text) as the object vendors want; unparsable → ``{}``."""
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {"value": value}


def tool_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    """tool_call_id → function name, from the assistant messages' ``tool_calls`` (Gemini wants the name
    on a function response; OpenAI's tool message carries only the id)."""
    names: dict[str, str] = {}
    for m in messages:
        for tc in m.get("tool_calls") or []:
            if isinstance(tc, dict):
                names[str(tc.get("id"))] = str((tc.get("function") or {}).get("name") or "")
    return names


@dataclass(frozen=True)
class Image:
    """An ``image_url`` part: ``data`` (base64) and ``mime`` for a data: URL, else ``url``."""

    url: str | None = None
    mime: str | None = None
    data: str | None = None


def parts(provider: str, content: Any) -> list[str | Image]:
    """A message's content as text pieces and images; a part type the translation cannot carry is refused."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        return [str(content)]
    out: list[str | Image] = []
    for part in content:
        if not isinstance(part, dict):
            raise _bad("message content parts must be objects", "messages")
        kind = part.get("type")
        if kind == "text" or (kind is None and "text" in part):
            if part.get("text"):
                out.append(str(part["text"]))
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str) or not url:
                raise _bad("an image_url part needs image_url.url", "messages")
            out.append(image(url))
        else:
            raise UnsupportedFeature(provider, f"message content parts of type '{kind}'")
    return out


def image(url: str) -> Image:
    """A data: URL split into its media type and base64 data; an http(s) URL kept as is."""
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        if not sep or ";base64" not in head:
            raise _bad("an image data: URL must be base64 (data:<type>;base64,...)", "messages")
        return Image(mime=head.split(";", 1)[0] or "application/octet-stream", data=data)
    if url.startswith(("http://", "https://")):
        return Image(url=url)
    raise _bad("an image URL must be a data: URL or an http(s) URL", "messages")


def refuse_penalties(provider: str, params: dict[str, Any]) -> None:
    """presence/frequency penalties the vendor lacks: 0 (OpenAI's default) changes nothing and passes."""
    for name in ("presence_penalty", "frequency_penalty"):
        if params.get(name) not in (None, 0, 0.0):
            raise UnsupportedFeature(provider, name)


def refuse_parallel_off(provider: str, params: dict[str, Any]) -> None:
    if params.get("parallel_tool_calls") is False:
        raise UnsupportedFeature(provider, "parallel_tool_calls: false (it cannot turn parallel tool calls off)")


class ToolCallPieces:
    """Tool calls assembled from a stream, numbered in the order they start (OpenAI's ``index``)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def start(self, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
        """Begin a call; the first delta event of it (id, type, name and any first arguments)."""
        index = len(self.calls)
        self.calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        return {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    def add(self, index: int, piece: str) -> dict[str, Any]:
        """More arguments for call ``index``; the delta event."""
        self.calls[index]["function"]["arguments"] += piece
        return {"index": index, "function": {"arguments": piece}}

    def whole(self) -> list[dict[str, Any]]:
        return self.calls


def check_openai_options(call: Any) -> None:
    """For the plugins that pass OpenAI's request on as it is (``openai``, ``openai_compat``): the same 400s for a
    malformed ``tool_choice``, ``response_format`` or image URL as the translating plugins answer, before the
    vendor sees it. Part types and options the vendor may know are left to it."""
    params = call.parameters
    if params:
        tool_choice(params.get("tool_choice"), call.tools)
        response_format(params.get("response_format"))
    for message in call.messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    parts(call.provider, [part])
