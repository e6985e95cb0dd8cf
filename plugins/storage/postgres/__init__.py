"""Storage plugin ``postgres``: documents in a PostgreSQL server (``DATABASE_URL``), for several API
processes and machines. asyncpg is imported only when this backend is selected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gofannon import hookimpl


@hookimpl
def register_storage_backends(register: Callable[..., None]) -> None:
    def factory(settings: Any) -> Any:
        from gofannon_plugins.storage.postgres.store import PostgresStore

        return PostgresStore.from_settings(settings)

    register("postgres", factory)
