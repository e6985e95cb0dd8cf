"""Plugin manager: loads entry points of the group ``gofannon`` one by one, isolating failures.

Bundled plugins (``gofannon_plugins.*``) are entry points like any other; they are registered after the
third-party ones so that a third-party ``tryfirst`` implementation wins a name. A plugin that fails to
import or register is recorded and skipped unless strict mode is on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from gofannon import hookspecs

log = logging.getLogger("gofannon.plugins")

ENTRY_POINT_GROUP = "gofannon"
BUNDLED_PREFIX = "gofannon_plugins."


class PluginLoadError(RuntimeError):
    """Raised in strict mode when a plugin cannot be loaded or registered."""


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str | None
    bundled: bool
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


class PluginManager:
    """A typed front door over pluggy: call sites never touch ``pm.hook`` directly."""

    def __init__(
        self,
        *,
        strict: bool = False,
        load: Iterable[str] | None = None,
        disable: Iterable[str] = (),
        trace: bool = False,
    ) -> None:
        self.pm = pluggy.PluginManager("gofannon")
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        self.allow = set(load) if load is not None else None
        self.disable = set(disable)
        self.plugins: dict[str, PluginInfo] = {}
        self.trace = trace
        if trace:
            self.pm.trace.root.setwriter(lambda msg: log.warning("plugin trace: %s", msg.rstrip()))
            self.pm.enable_tracing()

    # -- loading -----------------------------------------------------------------------------------
    def _wanted(self, name: str) -> bool:
        if name in self.disable:
            return False
        return self.allow is None or name in self.allow

    def _fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        log.error("plugin %s (%s) failed to load: %s", info.name, info.version, info.error)
        if self.strict:
            raise PluginLoadError(f"plugin {info.name!r} failed to load: {info.error}") from exc

    def load_entry_points(self) -> None:
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        # Third-party first, bundled last (see module docstring).
        eps.sort(key=lambda ep: ep.value.startswith(BUNDLED_PREFIX))
        seen: set[str] = set()
        versions: dict[int, str | None] = {}  # reading a version parses METADATA: once per distribution
        for ep in eps:
            if ep.name in seen or not self._wanted(ep.name):
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            if id(dist) not in versions:
                versions[id(dist)] = getattr(dist, "version", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                version=versions[id(dist)],
                bundled=ep.value.startswith(BUNDLED_PREFIX),
            )
            self.plugins[ep.name] = info
            try:
                obj = ep.load()
                self.pm.register(obj, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - isolation is the point
                self._fail(info, exc)
                continue
            try:
                # Checked per plugin, so a misspelled hook is charged to the plugin that has it.
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:
                self.pm.unregister(name=ep.name)
                self._fail(info, exc)
                continue
            info.hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])

    def register(self, obj: Any, name: str) -> None:
        """Register an in-process plugin object (tests, embedding); an unknown hook is refused outright."""
        self.pm.register(obj, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.pm.unregister(name=name)
            raise
        self.plugins[name] = PluginInfo(
            name=name, module=getattr(obj, "__name__", type(obj).__name__), version=None, bundled=False,
            hooks=sorted(h.name for h in self.pm.get_hookcallers(obj) or []),
        )

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.plugins.pop(name, None)

    # -- calling -----------------------------------------------------------------------------------
    def collect(
        self,
        hook_name: str,
        *,
        key: Callable[..., str],
        value: Callable[..., Any] = lambda obj, *a, **kw: obj,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Call a register-style hook and gather what is registered; the first registration of a name wins.

        ``key(*args, **kw)`` names what one ``register(*args, **kw)`` call registers and ``value`` builds
        what is kept. Each implementation is called on its own, so one that raises is recorded against
        its plugin (or is fatal in strict mode) and the others still register.
        """
        found: dict[str, Any] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # pluggy's call order: tryfirst, then last registered
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            staged: list[tuple[str, Any]] = []

            def register(*args: Any, _staged: list[tuple[str, Any]] = staged, **kw: Any) -> None:
                _staged.append((key(*args, **kw), value(*args, **kw)))

            if self.trace:  # collect calls implementations itself, so pluggy's tracing does not see these
                log.warning("plugin trace: %s(%s) [%s]", hook_name, ", ".join(a for a in impl.argnames), plugin_name)
            try:
                impl.function(**{arg: (register if arg == "register" else kwargs[arg]) for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - one plugin must not take the kernel down
                info = self.plugins.setdefault(plugin_name, PluginInfo(plugin_name, plugin_name, None, False))
                self._fail(info, exc)
                continue
            for name, obj in staged:
                if name in found:
                    log.info("%s: %r from %s shadowed by an earlier registration", hook_name, name, plugin_name)
                    continue
                found[name] = obj
        return found

    def call_all(self, hook_name: str, **kwargs: Any) -> list[Any]:
        return list(getattr(self.pm.hook, hook_name)(**kwargs))

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def listing(self) -> list[PluginInfo]:
        return sorted(self.plugins.values(), key=lambda p: (p.bundled, p.name))


def build_plugin_manager(settings: Any) -> PluginManager:
    started = time.perf_counter()
    pm = PluginManager(
        strict=settings.strict_plugins,
        load=settings.load_plugins,
        disable=settings.disable_plugins,
        trace=settings.trace_plugins,
    )
    pm.load_entry_points()
    log.debug("plugins loaded in %.1f ms", (time.perf_counter() - started) * 1000)
    return pm
