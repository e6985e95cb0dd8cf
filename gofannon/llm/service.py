"""``call_llm``: the one way anything in the platform talks to a model.

It gates on the caller's allowance (402), checks parameters against the catalog (422), picks the
caller's own key or the server's, calls the provider plugin (retries, timeout), prices the answer from
its token usage (``prices.json``), charges the caller atomically with metadata, and records an
observability event. Chat tickets, code generation and agents (through the sandbox broker) all use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from gofannon.errors import BadRequest, GatewayTimeout, GofannonError, Unprocessable, UpstreamError
from gofannon.llm import (Completion, LlmCall, LlmResult, Provider, StreamEvent, UnsupportedFeature, Usage, VendorError,
                          message_text)
from gofannon.llm import catalog as catalog_mod
from gofannon.llm.http import CALL_DEADLINE, llm_http
from gofannon.observability import LLM_CONTENT, TRACERS, Redactor, configured_secrets, record_soon

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.llm")

#: Providers whose keys users may store in their profile (wire contract §6.4).
USER_KEY_PROVIDERS = frozenset({"openai", "anthropic", "gemini", "perplexity", "openrouter"})
_EFFORT_OFF = {None, "", "disable", "disabled", "none", "off"}


class InvalidApiKey(BadRequest):
    """The vendor refused the key (the reference's message, kept)."""


class ContextWindowExceeded(BadRequest):
    """The prompt does not fit the model (the reference's message, kept)."""


class ProviderNotConfigured(BadRequest):
    """No plugin or no key for the provider."""


# -- kernel service -----------------------------------------------------------------------------------
async def start(kernel: "Kernel") -> None:
    """Build the catalog from plugins and config files and make it the active one."""
    catalog_mod.activate(catalog_mod.build_for(kernel.settings, kernel.providers))
    llm_http(kernel)


def catalog(kernel: "Kernel | None" = None) -> catalog_mod.Catalog:
    return catalog_mod.active()


def uid_of(ident: "Identity | str | None") -> str:
    if ident is None:
        return "anonymous"
    if isinstance(ident, str):
        return ident or "anonymous"
    return getattr(ident, "uid", None) or "anonymous"


# -- resolution ---------------------------------------------------------------------------------------
def plugin_for(kernel: "Kernel", provider: str, provider_config: dict[str, Any]) -> Provider:
    """The plugin serving a catalog provider: its ``plugin`` key, else a plugin of the same slug, else
    ``openai_compat`` when the provider names a base URL."""
    name = provider_config.get("plugin")
    if not name:
        name = provider if provider in kernel.providers else (
            "openai_compat" if provider_config.get("base_url") else provider)
    plugin = kernel.providers.get(name)
    if plugin is None:
        raise ProviderNotConfigured(f"Provider '{provider}' cannot be called: no installed provider plugin serves it.")
    return plugin  # type: ignore[no-any-return]


def _env_name(provider: str, suffix: str) -> str:
    return f"{provider.upper().replace('-', '_').replace('.', '_')}_{suffix}"


def base_url(kernel: "Kernel", provider: str, provider_config: dict[str, Any]) -> str | None:
    """``<SLUG>_BASE_URL`` from the environment, else the catalog's ``base_url`` (else the plugin's default)."""
    env_name = provider_config.get("base_url_env") or _env_name(provider, "BASE_URL")
    return kernel.settings.env(str(env_name)) or provider_config.get("base_url")


def env_api_key(kernel: "Kernel", provider: str, provider_config: dict[str, Any]) -> str | None:
    name = provider_config.get("api_key_env_var")
    if isinstance(name, str) and name:
        return kernel.settings.env(name)
    return None


def needs_key(provider_config: dict[str, Any]) -> bool:
    return bool(provider_config.get("api_key_env_var")) and not provider_config.get("key_optional")


def user_key_provider(uid: str, provider: str) -> str | None:
    """The provider whose key a user may store themselves, or None when only the server's key applies."""
    return provider if provider in USER_KEY_PROVIDERS and uid != "anonymous" else None


def resolve_key(kernel: "Kernel", provider: str, provider_config: dict[str, Any],
                user_key: str | None) -> tuple[str | None, str | None]:
    """(key, source): the user's own stored key when there is one, else the server's env key."""
    if user_key:
        return user_key, "user"
    key = env_api_key(kernel, provider, provider_config)
    return (key, "env") if key else (None, None)


def prepare_parameters(cat: catalog_mod.Catalog, provider: str, model: str,
                       parameters: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """Nulls dropped, catalog checks (422 with every problem), ``reasoning_effort`` split out."""
    if parameters is not None and not isinstance(parameters, dict):
        raise Unprocessable("parameters must be an object")
    params = {k: v for k, v in (parameters or {}).items() if v is not None}
    problems = cat.parameter_problems(provider, model, params)
    if problems:
        refused = Unprocessable(" ".join(problems))
        refused.param = next((p.param for p in problems if getattr(p, "param", None)), None)  # for /v1's error
        raise refused
    effort = params.pop("reasoning_effort", None)
    params.pop("reasoningEffort", None)
    effort = None if str(effort).lower() in _EFFORT_OFF or effort is None else str(effort)
    return params, effort


def _thoughts_jsonable(thoughts: Any) -> Any:
    if thoughts is None:
        return None
    try:
        return json.loads(json.dumps(thoughts, default=str))
    except (TypeError, ValueError):
        return str(thoughts)


def _operator_secrets(kernel: "Kernel") -> list[str]:
    """Every secret value the kernel knows: the configured ones (by their settings' names) and the provider key
    every catalog provider names (``api_key_env_var``, whatever that variable is called: Bedrock's is
    ``AWS_BEARER_TOKEN_BEDROCK``, an operator's own provider may use any name), longest first."""
    found = set(configured_secrets(kernel.settings))
    for slug, provider_config in catalog_mod.active().providers.items():
        key = env_api_key(kernel, slug, provider_config) if isinstance(provider_config, dict) else None
        if isinstance(key, str) and len(key) >= 8:
            found.add(key)
    return sorted(found, key=len, reverse=True)


def vendor_text(kernel: "Kernel", text: str) -> str:
    """A vendor's (or a plugin's) error text as a caller may see it: the kernel's secrets (the operator's provider
    keys among them) and known credential shapes hidden. Vendors quote what they were sent ("Incorrect API key
    provided: sk-...")."""
    redactor = kernel.component("llm.redactor", lambda: Redactor(_operator_secrets(kernel)))
    return redactor(text)


def map_vendor_error(kernel: "Kernel", exc: VendorError, provider: str, model: str, key_source: str | None,
                     model_config: dict[str, Any]) -> GofannonError:
    """The reference's clear messages for a bad key and an overlong prompt; the rest a 502 that says
    which provider failed and why (its text through ``vendor_text``)."""
    exc = VendorError(exc.status, vendor_text(kernel, exc.message), code=exc.code)
    if exc.code == "unreachable":  # nothing answered: not an error the provider returned
        reason = exc.message.removeprefix("could not reach the provider: ")
        return UpstreamError(f"{provider} could not be reached ({reason})")
    text = f"{exc.code or ''} {exc.message}".lower()
    if exc.status in (401, 403) or any(s in text for s in ("invalid_api_key", "authentication", "api key",
                                                           "api_key_invalid", "unauthenticated")):
        which = "user-specific" if key_source == "user" else "environment variable"
        return InvalidApiKey(f"Invalid API key for {provider}. Please check your {which} API key in your "
                             "profile settings.")
    if exc.status == 429 and "insufficient_quota" not in text:
        return UpstreamError(f"{provider} is rate limiting requests and retries were exhausted: {exc.message}")
    if any(s in text for s in ("prompt is too long", "context_length_exceeded", "maximum context length",
                               "context window", "too many tokens", "exceeds the maximum number of tokens")):
        window = model_config.get("context_window")
        return ContextWindowExceeded(
            f"Prompt exceeded {model}'s context window of {window if window else 'unknown'} tokens. "
            "Use hierarchical consolidation to process data in smaller groups.")
    if exc.status == 504:
        return GatewayTimeout(f"{provider}/{model} timed out: {exc.message}")
    if "insufficient_quota" in text:
        return UpstreamError(f"{provider} refused the request because the API key's quota is used up: {exc.message}")
    if exc.status == 429:
        return UpstreamError(f"{provider} is rate limiting requests and retries were exhausted: {exc.message}")
    mapped = UpstreamError(f"{provider} returned an error ({exc.status}): {exc.message}")
    mapped.upstream_status = exc.status  # the OpenAI-compatible API answers a vendor's refusal as the client's error
    return mapped


def _tool_call_chars(tool_call: Any) -> int:
    """How much output a streamed tool-call piece is (its JSON), for the estimate of an abandoned stream."""
    return len(json.dumps(tool_call, ensure_ascii=False, default=str)) if tool_call else 0


def _estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough prompt size (4 characters a token) for calls whose vendor never reported usage."""
    return max(1, sum(len(message_text(m.get("content"))) for m in messages if isinstance(m, dict)) // 4)


def check_messages(messages: Any) -> None:
    """422 unless ``messages`` is a non-empty list of ``{role, content}`` objects (agents send anything)."""
    if not isinstance(messages, list) or not messages:
        raise Unprocessable("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise Unprocessable(f"messages[{i}] must be an object with a 'role' and 'content'")


# -- the call ---------------------------------------------------------------------------------------
async def _prepare(kernel: "Kernel", uid: str, provider: str, model: str, messages: list[dict[str, Any]],
                   parameters: dict[str, Any] | None, tools: list[dict[str, Any]] | None,
                   timeout: float | None, extra: dict[str, Any],
                   workspace_id: str | None = None) -> tuple[Provider, LlmCall, str | None]:
    cat = catalog_mod.active()
    provider_config = cat.provider(provider)
    if provider_config is None:
        raise ProviderNotConfigured(f"Unknown provider '{provider}'.")
    model_config = cat.model(provider, model) or {}
    params, effort = prepare_parameters(cat, provider, model, parameters)
    check_messages(messages)
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise Unprocessable("tools must be a list of tool objects")
    plugin = plugin_for(kernel, provider, provider_config)
    from gofannon.services import users, workspace_budgets

    if workspace_budgets.charges_workspace(workspace_id):
        # A call made in a shared workspace needs both allowances; both are read at once.
        own_key, _ = await asyncio.gather(
            users.require_allowance(kernel, uid, key_for=user_key_provider(uid, provider)),
            workspace_budgets.require_allowance(kernel, str(workspace_id)))
    else:
        own_key = await users.require_allowance(kernel, uid, key_for=user_key_provider(uid, provider))
    key, source = resolve_key(kernel, provider, provider_config, own_key)
    if key is None and needs_key(provider_config):
        raise ProviderNotConfigured(
            f"No API key for {provider}: add your own key in your profile settings, or ask the operator to "
            "configure one.")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise Unprocessable(f"timeout must be a positive number of seconds, got {timeout!r}")
    call = LlmCall(
        provider=provider, model=model, messages=messages, parameters=params, reasoning_effort=effort,
        tools=tools or None, api_key=key, base_url=base_url(kernel, provider, provider_config),
        model_config=model_config, provider_config=provider_config,
        timeout=float(timeout or kernel.settings.llm_timeout_seconds), http=llm_http(kernel), extra=extra,
    )
    return plugin, call, source


async def _settle(kernel: "Kernel", uid: str, call: LlmCall, completion: Completion, started: float,
                  workspace_id: str | None = None, *, estimated: bool = False, defer: bool = False) -> LlmResult:
    usage = completion.usage
    cost, priced = catalog_mod.active().cost(call.provider, call.model, usage.input_tokens, usage.output_tokens,
                                             usage.cached_input_tokens)
    metadata: dict[str, Any] = {
        "provider": call.provider, "model": call.model,
        "inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens,
    }
    if usage.cached_input_tokens:
        metadata["cachedInputTokens"] = usage.cached_input_tokens
    if usage.reasoning_tokens:
        metadata["reasoningTokens"] = usage.reasoning_tokens
    if not priced:
        metadata["unpriced"] = True
    if estimated:  # the stream was abandoned before the vendor reported its usage
        metadata["estimated"] = True
        metadata["streamAbandoned"] = True
    from gofannon.services import users, workspace_budgets

    if workspace_budgets.charges_workspace(workspace_id):
        metadata["workspaceId"] = workspace_id
        # Two documents, each updated atomically; written at once.
        await asyncio.gather(users.charge(kernel, uid, cost, metadata),
                             workspace_budgets.charge(kernel, str(workspace_id), uid, cost,
                                                      f"{call.provider}/{call.model}"))
    elif not (defer and users.charge_later(kernel, uid, cost, metadata)):  # journaled: stored right after
        await users.charge(kernel, uid, cost, metadata)
    content = LLM_CONTENT.set((call.messages, {"content": completion.content, "tool_calls": completion.tool_calls})
                              ) if TRACERS else None
    try:
        event = {**metadata, "cost": cost, "durationMs": round((time.perf_counter() - started) * 1000, 2)}
        if defer:  # the answer leaves first (its charge is journaled); the event follows in the same loop turn
            record_soon(kernel, "llm_request", f"{call.provider}/{call.model}", user_id=uid, metadata=event)
        else:
            kernel.record("llm_request", f"{call.provider}/{call.model}", user_id=uid, metadata=event)
    finally:
        if content is not None:
            LLM_CONTENT.reset(content)
    return LlmResult(content=completion.content or "", thoughts=_thoughts_jsonable(completion.thoughts),
                     usage=usage, cost=cost, priced=priced, provider=call.provider, model=call.model,
                     finish_reason=completion.finish_reason)


def _failed(kernel: "Kernel", uid: str, provider: str, model: str, exc: Exception) -> None:
    event = "llm_request_failed"
    if isinstance(exc, InvalidApiKey):
        event = "invalid_api_key"
    elif isinstance(exc, ContextWindowExceeded):
        event = "context_window_exceeded"
    kernel.record(event, f"{provider}/{model}: {exc}", level="WARNING", user_id=uid,
                  metadata={"provider": provider, "model": model})


async def call_llm(kernel: "Kernel", ident: "Identity | str | None", provider: str, model: str,
                   messages: list[dict[str, Any]], parameters: dict[str, Any] | None = None, *,
                   tools: list[dict[str, Any]] | None = None, timeout: float | None = None,
                   workspace_id: str | None = None, defer_charge: bool = False, **kw: Any) -> LlmResult:
    """Call a model as ``ident`` and bill them. Raises 402 (allowance), 422 (parameters), 400 (unknown
    provider, missing or invalid key, context window), 502 (provider failure), 504 (timeout).

    ``workspace_id``: the workspace the call is made in; a shared one is charged too (and its allowance
    gates the call). None or a personal workspace: the caller alone, as before workspaces.

    ``defer_charge``: return once the caller's charge is journaled, and store it right after
    (``gofannon.services.charge_journal``; ``/v1`` does, so its answers do not wait for the store)."""
    uid = uid_of(ident)
    started = time.perf_counter()
    plugin, call, source = await _prepare(kernel, uid, provider, model, messages, parameters, tools, timeout, kw,
                                          workspace_id)
    deadline = CALL_DEADLINE.set(time.monotonic() + call.timeout)
    try:
        async with asyncio.timeout(call.timeout):
            completion = await plugin.complete(call)
    except VendorError as exc:
        mapped = map_vendor_error(kernel, exc, provider, model, source, call.model_config)
        _failed(kernel, uid, provider, model, mapped)
        raise mapped from None
    except UnsupportedFeature as exc:
        raise BadRequest(str(exc)) from None
    except TimeoutError:
        mapped = GatewayTimeout(f"{provider}/{model} did not answer within {call.timeout:g} s")
        _failed(kernel, uid, provider, model, mapped)
        raise mapped from None
    except GofannonError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's surprise is the provider's failure, not a 500
        log.warning("provider plugin for %s failed", provider, exc_info=True)
        mapped = UpstreamError(vendor_text(kernel, f"{provider}/{model} call failed: {type(exc).__name__}: {exc}"))
        _failed(kernel, uid, provider, model, mapped)
        raise mapped from None
    finally:
        CALL_DEADLINE.reset(deadline)
    return await _settle(kernel, uid, call, completion, started, workspace_id, defer=defer_charge)


async def call_llm_tuple(kernel: "Kernel", ident: "Identity | str | None", provider: str, model: str,
                         messages: list[dict[str, Any]], parameters: dict[str, Any] | None = None,
                         **kw: Any) -> tuple[str, Any]:
    """The reference's return shape, ``(content, thoughts)``, for agent code."""
    result = await call_llm(kernel, ident, provider, model, messages, parameters, **kw)
    return result.content, result.thoughts


async def stream_llm(kernel: "Kernel", ident: "Identity | str | None", provider: str, model: str,
                     messages: list[dict[str, Any]], parameters: dict[str, Any] | None = None, *,
                     tools: list[dict[str, Any]] | None = None, timeout: float | None = None,
                     workspace_id: str | None = None, defer_charge: bool = False,
                     **kw: Any) -> AsyncIterator[StreamEvent]:
    """Like ``call_llm`` but yields pieces as they arrive; the last event is ``done`` with the result
    (billed once the stream ends)."""
    uid = uid_of(ident)
    started = time.perf_counter()
    plugin, call, source = await _prepare(kernel, uid, provider, model, messages, parameters, tools, timeout, kw,
                                          workspace_id)
    final: Completion | None = None
    received = 0  # characters streamed so far: what an abandoned stream is billed on
    try:
        async with contextlib.aclosing(plugin.stream(call)) as events:  # closing us closes the vendor stream now
            async for event in events:
                if event.kind == "done":
                    final = event.completion
                    break
                received += len(event.text) if event.text else _tool_call_chars(event.tool_call)
                yield event
    except VendorError as exc:
        mapped = map_vendor_error(kernel, exc, provider, model, source, call.model_config)
        _failed(kernel, uid, provider, model, mapped)
        raise mapped from None
    except UnsupportedFeature as exc:
        raise BadRequest(str(exc)) from None
    except (GeneratorExit, asyncio.CancelledError):
        # The caller went away mid-stream: the vendor has already produced (and will bill) what was streamed,
        # so the caller is charged an estimate (4 characters a token) rather than nothing; before any output,
        # nothing (docs/gateway.md).
        if not received:
            raise
        estimate = Usage(input_tokens=_estimate_tokens(messages), output_tokens=max(1, received // 4))
        kernel.spawn(_settle(kernel, uid, call, Completion("", None, estimate), started, workspace_id,
                             estimated=True),
                     name="settle-abandoned-stream")
        raise
    if final is None:
        final = Completion(content="", usage=Usage())
    result = await _settle(kernel, uid, call, final, started, workspace_id, defer=defer_charge)
    yield StreamEvent("done", completion=Completion(result.content, result.thoughts, result.usage,
                                                    result.finish_reason))
