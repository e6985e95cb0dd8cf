"""The plugin contract: every hook the kernel calls, typed and documented.

Register-style hooks receive a ``register`` callback (as simonw/llm does): the kernel validates what is
registered, a plugin may register zero or many things, and the first registration of a name wins.
Bundled plugins are registered after third-party ones, so a third-party plugin that marks its
implementation ``tryfirst=True`` overrides a bundled one of the same name.

Every hook here is documented in docs/plugins.md; tests/test_plugin_contract.py enforces that and
that every hook is exercised by a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.settings import Settings

hookspec = pluggy.HookspecMarker("gofannon")


@hookspec
def register_providers(register: Callable[..., None], settings: "Settings") -> None:
    """Register LLM providers: ``register(provider)`` with an object satisfying ``gofannon.llm.Provider``.

    Since 0.1.
    """


@hookspec
def register_auth_backends(register: Callable[..., None], settings: "Settings") -> None:
    """Register auth backends: ``register(backend)`` with a ``gofannon.auth.LoginBackendFactory``
    (``kind="login"``: builds a browser login flow such as dev_stub or OIDC from an auth-config entry of
    its ``type``) or a ``gofannon.auth.RequestAuthenticator`` (``kind="request"``: resolves a caller from a
    request, such as a bearer token). Since 0.1.
    """


@hookspec
def register_tool_connectors(register: Callable[..., None], settings: "Settings") -> None:
    """Register tool connectors: ``register(connector)`` with a ``gofannon.tools.ToolConnector``
    (for example MCP servers or OpenAPI specs). Since 0.1.
    """


@hookspec
def register_storage_backends(register: Callable[..., None]) -> None:
    """Register document stores: ``register(name, factory)`` where ``factory(settings)`` returns a
    ``gofannon.store.DocumentStore``. ``GOFANNON_STORAGE`` selects one by name. Since 0.1.
    """


@hookspec
def register_routes(register: Callable[..., None], settings: "Settings") -> None:
    """Register HTTP routes: ``register(method, path, handler, public=False)``. Handlers are aiohttp
    handlers; routes require an authenticated caller unless ``public=True``. Since 0.1.
    """


@hookspec
def gofannon_startup(app: "web.Application") -> Any:
    """Called once when the application starts, after the store and queue are open. May return an
    awaitable, which the kernel awaits. Since 0.1.
    """


@hookspec
def gofannon_shutdown(app: "web.Application") -> Any:
    """Called once when the application stops, before the store and queue are closed. May return an
    awaitable, which the kernel awaits. Since 0.1.
    """


@hookspec
def record_event(event: dict[str, Any]) -> None:
    """Observability: called for every event the platform records (client logs, LLM calls, sandbox
    runs, background failures). ``event`` has ``timestamp, level, eventType, service, userId, message,
    metadata`` with secrets already redacted. Must not block: hand the event to a queue. Since 0.1.
    """
