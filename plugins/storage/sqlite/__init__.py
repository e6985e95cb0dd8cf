"""Storage plugin ``sqlite``: the embedded default, one file in the data directory."""

from __future__ import annotations

from typing import Any, Callable

from gofannon import hookimpl


@hookimpl
def register_storage_backends(register: Callable[..., None]) -> None:
    def factory(settings: Any) -> Any:
        from gofannon_plugins.storage.sqlite.store import SQLiteStore

        return SQLiteStore.from_settings(settings)

    register("sqlite", factory)
