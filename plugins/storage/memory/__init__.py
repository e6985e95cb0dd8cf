"""Storage plugin ``memory``: the in-process store, for tests and throwaway runs."""

from __future__ import annotations

from typing import Any, Callable

from gofannon import hookimpl


@hookimpl
def register_storage_backends(register: Callable[..., None]) -> None:
    def factory(settings: Any) -> Any:
        from gofannon.store.memory import MemoryStore

        return MemoryStore(settings)

    register("memory", factory)
