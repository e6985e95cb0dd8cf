"""Storage plugin ``redis``: documents shared by every process pointing at ``REDIS_URL``."""

from __future__ import annotations

from typing import Any, Callable

from gofannon import hookimpl


@hookimpl
def register_storage_backends(register: Callable[..., None]) -> None:
    def factory(settings: Any) -> Any:
        from gofannon_plugins.storage.redis.store import RedisStore

        return RedisStore.from_settings(settings)

    register("redis", factory)
