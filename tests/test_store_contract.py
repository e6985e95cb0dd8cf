"""The DocumentStore conformance suite against every bundled backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from gofannon.store.conformance import DocumentStoreContract


class TestMemoryStore(DocumentStoreContract):
    factory_path = "gofannon.store.memory:MemoryStore"


class TestSQLiteStore(DocumentStoreContract):
    durable = True
    factory_path = "gofannon_plugins.storage.sqlite.store:SQLiteStore.from_settings"

    @pytest.fixture
    def store_env(self, tmp_path: Path) -> dict[str, str]:
        return {"GOFANNON_DATA_DIR": str(tmp_path / "data")}
