"""Store specs: how the command line names a store, and the store (or kernel) a spec selects.

Shared by ``gofannon store copy`` (``gofannon.store.cli``) and ``gofannon store import-reference``
(``gofannon.store.reference_import``); both sit above this module. The spec forms are listed in
``gofannon.store.cli``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gofannon.settings import Settings

SQLITE_FILE = "gofannon.sqlite3"


class SpecError(ValueError):
    """A store spec the command line cannot use."""


def spec_env(spec: str, *, must_exist: bool = False) -> dict[str, str]:
    """The settings (environment variables) that select the store a spec names."""
    spec = spec.strip()
    lowered = spec.lower()
    if lowered == "configured":
        return {}
    if lowered.startswith(("postgres://", "postgresql://", "postgresql+", "postgres+")):
        return {"GOFANNON_STORAGE": "postgres", "DATABASE_URL": spec}
    if lowered.startswith(("redis://", "rediss://", "unix://")):
        return {"GOFANNON_STORAGE": "redis", "REDIS_URL": spec}
    if lowered.startswith("sqlite:"):
        raw = spec[len("sqlite:"):]
        raw = raw.removeprefix("//")
        if not raw:
            raise SpecError("sqlite: needs a data directory, e.g. sqlite:/var/lib/gofannon/data")
        path = Path(raw).expanduser()
        if path.name == SQLITE_FILE or path.is_file():
            if path.name != SQLITE_FILE:
                raise SpecError(f"{spec}: name the data directory that holds {SQLITE_FILE}, not another file")
            path = path.parent
        if must_exist and not (path / SQLITE_FILE).is_file():
            raise SpecError(f"{spec}: no SQLite store there ({path / SQLITE_FILE} does not exist)")
        return {"GOFANNON_STORAGE": "sqlite", "GOFANNON_DATA_DIR": str(path)}
    name, sep, rest = spec.partition(":")
    if sep and not rest and name:
        return {"GOFANNON_STORAGE": name}
    raise SpecError(
        f"unrecognised store {spec!r}: use sqlite:DIR, postgres://..., redis://..., memory:, configured or NAME:"
    )


def describe(spec: str) -> str:
    """The spec with any password in a URL masked, for printing."""
    if "://" in spec and "@" in spec:
        scheme, rest = spec.split("://", 1)
        creds, _, host = rest.rpartition("@")
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return spec


def make_kernel(env: Mapping[str, str]) -> Any:
    """A command-line kernel (plugins loaded, nothing started) for the settings env overrides select."""
    from gofannon.kernel import Kernel

    settings = Settings.load({**os.environ, **env})
    return Kernel(settings, role="cli")


@asynccontextmanager
async def opened_store(spec: str, *, must_exist: bool = False) -> AsyncIterator[Any]:
    kernel = make_kernel(spec_env(spec, must_exist=must_exist))
    store = kernel.open_store()
    await store.open()
    try:
        yield store
    finally:
        await store.close()
