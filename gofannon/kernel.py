"""The kernel: settings, plugins, store, job queue and the registries, shared by API and workers.

Both ``create_app`` and ``gofannon worker`` build one ``Kernel``. Services are modules of functions that
take the kernel; a service that owns a resource (a pool, a sweeper) keeps it as a *component* here, so
it is created once and closed with the kernel. Service modules listed in ``SERVICE_MODULES`` may define
``async def start(kernel)`` / ``async def stop(kernel)``; the kernel calls them in order. They may also define
``def serving(kernel)``, called when the server listens (``Kernel.serving``) if the host asked for that.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any, Awaitable, Callable, TypeVar

from gofannon.plugins import PluginManager, build_plugin_manager
from gofannon.settings import Settings

log = logging.getLogger("gofannon.kernel")
T = TypeVar("T")

#: Service modules with optional start/stop functions, started in this order (stopped in reverse).
SERVICE_MODULES: tuple[str, ...] = (
    "gofannon.services.secrets",
    "gofannon.services.sessions",
    "gofannon.services.users",
    "gofannon.llm.service",
    "gofannon.jobs.tickets",
    "gofannon.sandbox.pool",
    "gofannon.services.runs",
)


class Kernel:
    def __init__(self, settings: Settings, pm: PluginManager | None = None, *, role: str = "api") -> None:
        self.settings = settings
        self.role = role  # "api" | "worker" | "cli"
        if role == "api":  # the sandbox tier's probe runs in another process: begin it now, overlapping start-up
            from gofannon.sandbox.pool import probe_in_background

            probe_in_background(settings.sandbox_tier)
        self.pm = pm or build_plugin_manager(settings)
        self.storage_backends: dict[str, Callable[[Settings], Any]] = self.pm.collect(
            "register_storage_backends", key=lambda name, factory: name, value=lambda name, factory: factory
        )
        self.providers: dict[str, Any] = self.pm.collect(
            "register_providers", key=lambda p: p.slug, settings=settings
        )
        self.auth_backends: dict[str, Any] = self.pm.collect(
            "register_auth_backends", key=lambda b: f"{b.kind}:{getattr(b, 'type', None) or b.name}", settings=settings
        )
        self.tool_connectors: dict[str, Any] = self.pm.collect(
            "register_tool_connectors", key=lambda c: c.name, settings=settings
        )
        self.store: Any = None
        self.queue: Any = None
        #: Set by a host that calls ``serving()`` once it listens (``gofannon serve``): services then hold back
        #: background work that competes for the CPU (the sandbox pool's warm-up) until then.
        self.defer_warmup = False
        self._components: dict[str, Any] = {}
        self._started: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- resources ----------------------------------------------------------------------------------
    def open_store(self) -> Any:
        name = self.settings.storage
        factory = self.storage_backends.get(name)
        if factory is None:
            known = ", ".join(sorted(self.storage_backends)) or "none"
            raise RuntimeError(f"GOFANNON_STORAGE={name!r}: no such storage plugin (installed: {known})")
        return factory(self.settings)

    def open_queue(self) -> Any:
        """The job queue: RQ when ``REDIS_URL`` is set, else in-process (the jobs package sits below the kernel)."""
        if self.settings.redis_url:
            from gofannon.jobs.rq_queue import RQJobQueue

            return RQJobQueue(self)
        from gofannon.jobs.inline import InlineJobQueue

        return InlineJobQueue(self)

    async def open(self) -> None:
        self.store = self.open_store()
        await self.store.open()
        self.queue = self.open_queue()
        await self.queue.start()
        for name in SERVICE_MODULES:
            module = importlib.import_module(name)
            start = getattr(module, "start", None)
            if start is not None:
                await start(self)
            self._started.append(module)

    def serving(self) -> None:
        """The server now accepts connections: start what ``defer_warmup`` held back (services' ``serving``)."""
        for module in self._started:
            serving = getattr(module, "serving", None)
            if serving is not None:
                serving(self)

    async def close(self) -> None:
        for comp in list(self._components.values()):  # work queued in memory (charges) is written first
            drain = getattr(comp, "drain", None)
            if drain is not None:
                try:
                    await drain()
                except Exception:  # noqa: BLE001 - keep closing the rest
                    log.exception("draining a component failed")
        for module in reversed(self._started):
            stop = getattr(module, "stop", None)
            if stop is not None:
                try:
                    await stop(self)
                except Exception:  # noqa: BLE001 - keep closing the rest
                    log.exception("stopping %s failed", module.__name__)
        self._started.clear()
        for task in list(self._tasks):
            task.cancel()
        for comp in reversed(list(self._components.values())):
            close = getattr(comp, "close", None)
            if close is not None:
                try:
                    res = close()
                    if asyncio.iscoroutine(res):
                        await res
                except Exception:  # noqa: BLE001
                    log.exception("closing component failed")
        self._components.clear()
        if self.queue is not None:
            await self.queue.close()
        if self.store is not None:
            await self.store.close()

    # -- components and background tasks ------------------------------------------------------------
    def component(self, key: str, factory: Callable[[], T]) -> T:
        """The one instance of a component, created on first use and closed with the kernel."""
        try:
            return self._components[key]  # type: ignore[no-any-return]
        except KeyError:
            obj = self._components[key] = factory()
            return obj

    def has_component(self, key: str) -> bool:
        return key in self._components

    def spawn(self, coro: Awaitable[Any], *, name: str | None = None) -> asyncio.Task[Any]:
        """Run a background task whose reference is kept (and cancelled at close)."""
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    # -- observability ------------------------------------------------------------------------------
    def record(self, event_type: str, message: str = "", *, level: str = "INFO", user_id: str | None = None,
               service: str = "user-service", metadata: dict[str, Any] | None = None) -> None:
        from gofannon.observability import record

        record(self, event_type, message, level=level, user_id=user_id, service=service, metadata=metadata)
