"""Run records (collection ``gofannon_runs``, wire contract §11) and run outcomes.

A record is written when a streamed or started run begins and completed by whoever ran it (the API
process in-process, a ``gofannon worker`` with ``REDIS_URL``).
"""

from __future__ import annotations

from typing import Any

RUNS = "gofannon_runs"

#: Keys of a run in ``GET /runs`` (in this order).
SUMMARY_KEYS: tuple[str, ...] = (
    "runId", "agentId", "agentName", "status", "startedAt", "completedAt", "inputDict", "error",
)
#: Extra keys of ``GET /runs/{id}``.
DETAIL_KEYS: tuple[str, ...] = ("events", "result", "schemaWarnings", "opsLog")

STATUSES = ("running", "success", "error", "stopped")


def summary(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: record.get(k) for k in SUMMARY_KEYS}
    if record.get("workspaceId"):
        out["workspaceId"] = record["workspaceId"]  # only runs made in a shared workspace carry one
    return out


def detail(record: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = summary(record)
    out["events"] = record.get("events") or [] if events is None else events
    out["result"] = record.get("result")
    out["schemaWarnings"] = record.get("schemaWarnings")
    out["opsLog"] = record.get("opsLog")
    return out


def nullable(items: list[Any] | None) -> list[Any] | None:
    """The wire returns empty lists as ``null`` (§1.8)."""
    return items or None
