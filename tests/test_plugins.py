"""The plugin manager: isolation of broken plugins, strict mode, allow/block lists, tracing, overrides."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable

import pluggy
import pytest

from gofannon import hookimpl
from gofannon.app import create_app
from gofannon.kernel import Kernel
from gofannon.plugins import PluginLoadError, PluginManager, build_plugin_manager
from gofannon.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``add(name, source)`` installs a throwaway plugin: a module plus a dist-info with its entry point.

    The directory is on sys.path for this test only; the returned module name is unique per test so
    nothing leaks through ``sys.modules``.
    """
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    added: list[str] = []

    def add(name: str, source: str, version: str = "1.2.3") -> str:
        module = f"{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[gofannon]\n{name} = {module}\n")
        added.append(module)
        return module

    add.root = root  # type: ignore[attr-defined]
    yield add  # type: ignore[misc]
    for module in added:
        sys.modules.pop(module, None)


BROKEN_IMPORT = "import gofannon_no_such_dependency\n"
BROKEN_REGISTER = """
from gofannon import hookimpl

@hookimpl
def register_providers(register, settings):
    raise RuntimeError("kaput while registering")
"""


def test_a_plugin_that_fails_to_import_is_recorded_with_its_version_and_skipped(
        plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    plugin_dir("broken-import", BROKEN_IMPORT, version="0.9")
    pm = build_plugin_manager(make_settings())
    info = pm.plugins["broken-import"]
    assert info.version == "0.9" and not info.bundled
    assert info.error is not None and "ModuleNotFoundError" in info.error and "gofannon_no_such_dependency" in info.error
    assert pm.plugins["sqlite"].error is None  # the others loaded


async def test_the_kernel_keeps_serving_with_broken_plugins_installed(plugin_dir: Any, serve: Any) -> None:
    plugin_dir("broken-import", BROKEN_IMPORT)
    plugin_dir("broken-register", BROKEN_REGISTER)
    client = await serve()
    async with client.get("/health") as r:
        assert r.status == 200
    kernel = client.server.app[__import__("gofannon.web.keys", fromlist=["KERNEL"]).KERNEL]
    assert "kaput while registering" in (kernel.pm.plugins["broken-register"].error or "")
    assert "openai" in kernel.providers  # bundled providers still registered


def test_strict_mode_makes_an_import_failure_fatal(plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    plugin_dir("broken-import", BROKEN_IMPORT)
    with pytest.raises(PluginLoadError, match="broken-import"):
        create_app(make_settings(GOFANNON_STRICT_PLUGINS="1"))


def test_strict_mode_makes_a_failing_registration_fatal(plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    plugin_dir("broken-register", BROKEN_REGISTER)
    with pytest.raises(PluginLoadError, match="kaput while registering"):
        Kernel(make_settings(GOFANNON_STRICT_PLUGINS="true"))


def test_gofannon_plugins_lists_the_error_and_strict_mode_fails_the_command(plugin_dir: Any, tmp_path: Path) -> None:
    plugin_dir("broken-import", BROKEN_IMPORT, version="0.9")
    env = {**os.environ, "PYTHONPATH": str(plugin_dir.root), "GOFANNON_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "gofannon", "plugins"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("broken-import"))
    assert "0.9" in line and "ERROR ModuleNotFoundError" in line
    assert any(l.startswith("sqlite") and "register_storage_backends" in l for l in out.stdout.splitlines())
    strict = subprocess.run([sys.executable, "-m", "gofannon", "plugins"], env={**env, "GOFANNON_STRICT_PLUGINS": "1"},
                            capture_output=True, text=True)
    assert strict.returncode == 1


def test_load_plugins_is_an_allow_list(make_settings: Callable[..., Settings]) -> None:
    pm = build_plugin_manager(make_settings(GOFANNON_LOAD_PLUGINS="memory, sqlite"))
    assert sorted(pm.plugins) == ["memory", "sqlite"]
    kernel = Kernel(make_settings(GOFANNON_LOAD_PLUGINS="memory,sqlite"))
    assert sorted(kernel.storage_backends) == ["memory", "sqlite"] and kernel.providers == {}


def test_disable_plugins_is_a_block_list_that_also_skips_broken_ones(
        plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    plugin_dir("broken-import", BROKEN_IMPORT)
    pm = build_plugin_manager(make_settings(GOFANNON_DISABLE_PLUGINS="broken-import,openai", GOFANNON_STRICT_PLUGINS="1"))
    assert "broken-import" not in pm.plugins and "openai" not in pm.plugins
    assert "anthropic" in pm.plugins


def test_trace_plugins_logs_every_hook_call(make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gofannon.plugins"):
        kernel = Kernel(make_settings(GOFANNON_TRACE_PLUGINS="1"))
        kernel.pm.call_all("gofannon_shutdown", app=None)
    traced = "\n".join(r.getMessage() for r in caplog.records if "plugin trace" in r.getMessage())
    assert "register_storage_backends" in traced and "[sqlite]" in traced
    assert "register_providers" in traced
    assert "gofannon_shutdown" in traced


def test_tracing_is_off_by_default(make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gofannon.plugins"):
        Kernel(make_settings())
    assert not [r for r in caplog.records if "plugin trace" in r.getMessage()]


def test_an_implementation_of_an_unknown_hook_is_rejected() -> None:
    class Misspelled:
        @hookimpl
        def register_provider(self, register: Any) -> None:  # sic: the hook is register_providers
            pass

    pm = PluginManager()
    with pytest.raises(pluggy.PluginValidationError, match="register_provider"):
        pm.register(Misspelled(), name="misspelled")
    assert "misspelled" not in pm.plugins and pm.pm.get_plugin("misspelled") is None


def test_an_installed_plugin_with_an_unknown_hook_is_recorded_not_loaded(
        plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    plugin_dir("misspelled", "from gofannon import hookimpl\n\n@hookimpl\ndef register_provider(register):\n    pass\n")
    pm = build_plugin_manager(make_settings())
    assert "register_provider" in (pm.plugins["misspelled"].error or "")
    assert "misspelled" not in [pm.pm.get_name(p) for p in pm.pm.get_plugins()]
    with pytest.raises(PluginLoadError):
        build_plugin_manager(make_settings(GOFANNON_STRICT_PLUGINS="1"))


OVERRIDE = """
from gofannon import hookimpl

class Marked:
    name = "memory"
    def __init__(self, settings):
        self.settings = settings

@hookimpl(tryfirst={tryfirst})
def register_storage_backends(register):
    register("memory", Marked)
"""


def test_a_third_party_tryfirst_registration_overrides_a_bundled_name(
        plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    module = plugin_dir("better-memory", OVERRIDE.format(tryfirst=True))
    kernel = Kernel(make_settings())
    assert kernel.storage_backends["memory"] is sys.modules[module].Marked
    assert kernel.storage_backends["sqlite"].__module__.startswith("gofannon_plugins.")


def test_without_tryfirst_the_bundled_registration_keeps_its_name(
        plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    module = plugin_dir("other-memory", OVERRIDE.format(tryfirst=False))
    kernel = Kernel(make_settings())
    assert kernel.storage_backends["memory"] is not sys.modules[module].Marked


def test_bundled_plugins_are_registered_after_third_party_ones(
        plugin_dir: Any, make_settings: Callable[..., Settings]) -> None:
    plugin_dir("third-party", "x = 1\n")
    pm = build_plugin_manager(make_settings())
    order = [pm.pm.get_name(p) for p in pm.pm.get_plugins()]
    names = list(pm.plugins)
    assert names.index("third-party") < min(names.index(n) for n in ("sqlite", "openai", "dev_stub"))
    assert "third-party" in order


def test_an_in_process_plugin_can_be_registered_and_unregistered(make_settings: Callable[..., Settings]) -> None:
    class Extra:
        @hookimpl
        def register_providers(self, register: Any, settings: Any) -> None:
            register(type("P", (), {"slug": "extra-test"})())

    kernel = Kernel(make_settings())
    kernel.pm.register(Extra(), name="extra")
    try:
        providers = kernel.pm.collect("register_providers", key=lambda p: p.slug, settings=kernel.settings)
        assert "extra-test" in providers
        assert kernel.pm.plugins["extra"].hooks == ["register_providers"]
    finally:
        kernel.pm.unregister("extra")
    assert "extra" not in kernel.pm.plugins


# -- the example third-party package --------------------------------------------------------------------
EXAMPLE = REPO / "examples" / "gofannon-hello-plugin"


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a private directory (not into the venv)."""
    target = tmp_path_factory.mktemp("hello-site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
           "--target", str(target), str(EXAMPLE)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:  # offline without an index: build with what the venv has
        out = subprocess.run([*cmd, "--no-build-isolation"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(target.glob("gofannon_hello_plugin-*.dist-info"))
    return target


@pytest.fixture
def hello_on_path(hello_site: Path) -> Any:
    sys.path.insert(0, str(hello_site))
    import importlib

    importlib.invalidate_caches()
    try:
        yield hello_site
    finally:
        sys.path.remove(str(hello_site))
        for name in [m for m in sys.modules if m == "gofannon_hello" or m.startswith("gofannon_hello.")]:
            del sys.modules[name]
        importlib.invalidate_caches()


def test_the_installed_example_plugin_shows_in_gofannon_plugins(hello_site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(hello_site), "GOFANNON_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "gofannon", "plugins"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.split()[0] == "hello")
    assert line.split()[1:3] == ["0.1.0", "installed"]
    assert "register_providers" in line and "register_routes" in line


def test_without_the_example_installed_it_is_not_listed(tmp_path: Path) -> None:
    env = {**os.environ, "GOFANNON_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "gofannon", "plugins", "--json"], env=env, capture_output=True, text=True)
    import json

    assert "hello" not in [p["name"] for p in json.loads(out.stdout)]


async def test_the_example_plugin_adds_its_route_and_provider(hello_on_path: Path, serve: Any) -> None:
    client = await serve()
    app = client.server.app
    assert ("GET", "/hello") in {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    async with client.get("/hello") as r:
        assert r.status == 200
        assert await r.json() == {"hello": "world", "plugin": "gofannon-hello-plugin"}
    await client.login("alice")
    async with client.get("/providers") as r:
        assert r.status == 200, await r.text()
        providers = await r.json()
    assert "hello" in providers and "hello-1" in providers["hello"]["models"]


# -- lifecycle and observability hooks --------------------------------------------------------------------
async def test_startup_and_shutdown_hooks_run_once_around_serving_and_events_reach_sinks(
        make_settings: Callable[..., Settings]) -> None:
    import aiohttp
    from aiohttp.test_utils import TestServer

    seen: list[str] = []
    events: list[dict[str, Any]] = []

    class Lifecycle:
        @hookimpl
        async def gofannon_startup(self, app: Any) -> None:
            from gofannon.web.keys import KERNEL

            assert app[KERNEL].store is not None  # the store is open before plugins start
            seen.append("startup")

        @hookimpl
        def gofannon_shutdown(self, app: Any) -> None:
            seen.append("shutdown")

        @hookimpl
        def record_event(self, event: dict[str, Any]) -> None:
            events.append(event)

    kernel = Kernel(make_settings(GOFANNON_STORAGE="memory"))
    kernel.pm.register(Lifecycle(), name="lifecycle")
    server = TestServer(create_app(kernel=kernel), host="127.0.0.1")
    await server.start_server()
    try:
        assert seen == ["startup"]
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/health")) as r:
                assert r.status == 200
        kernel.record("plugin_test", "password=hunter2hunter2 was typed", user_id="u1", metadata={"n": 1})
    finally:
        await server.close()
    assert seen == ["startup", "shutdown"]
    event = next(e for e in events if e["eventType"] == "plugin_test")
    assert event["userId"] == "u1" and event["metadata"] == {"n": 1}
    assert "hunter2" not in event["message"]  # sinks get events with secrets already redacted


async def test_a_plugin_auth_backend_can_authenticate_callers(make_settings: Callable[..., Settings]) -> None:
    import aiohttp
    from aiohttp.test_utils import TestServer

    from gofannon.auth import Identity

    class HeaderAuth:
        kind = "request"
        name = "test-header"

        async def authenticate(self, kernel: Any, request: Any) -> Identity | None:
            value = request.headers.get("Authorization", "")
            if not value.startswith("Test "):
                return None
            return Identity(uid=f"test:{value[5:]}", provider_type="test", display_name=value[5:])

    class AuthPlugin:
        @hookimpl
        def register_auth_backends(self, register: Any, settings: Any) -> None:
            register(HeaderAuth())

    kernel = Kernel(make_settings(GOFANNON_STORAGE="memory"))
    kernel.pm.register(AuthPlugin(), name="header-auth")
    kernel.auth_backends = kernel.pm.collect(
        "register_auth_backends", key=lambda b: f"{b.kind}:{getattr(b, 'type', None) or b.name}", settings=kernel.settings)
    assert "request:test-header" in kernel.auth_backends
    server = TestServer(create_app(kernel=kernel), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/auth/me"), headers={"Authorization": "Test carol"}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["uid"] == "test:carol"
            async with session.get(server.make_url("/auth/me")) as r:
                assert r.status == 401
    finally:
        await server.close()


def test_a_plugin_tool_connector_is_found_by_name(make_settings: Callable[..., Settings]) -> None:
    from gofannon.errors import ServiceUnavailable
    from gofannon.tools import connector

    class EchoTools:
        name = "echo-tools"

    class ToolsPlugin:
        @hookimpl
        def register_tool_connectors(self, register: Any, settings: Any) -> None:
            register(EchoTools())

    pm = build_plugin_manager(make_settings())
    pm.register(ToolsPlugin(), name="echo-tools")
    kernel = Kernel(make_settings(), pm)
    assert isinstance(connector(kernel, "echo-tools"), EchoTools)
    assert {"mcp", "openapi"} <= set(kernel.tool_connectors)
    with pytest.raises(ServiceUnavailable, match="not available"):
        connector(kernel, "no-such-connector")
