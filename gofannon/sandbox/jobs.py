"""The ``agent_run`` job: one agent run, wherever the job queue runs it (API process or worker).

The payload is plain JSON (identity, run spec, run id) so RQ can carry it; the outcome is the dict
``gofannon.services.runs.execute`` returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel


async def agent_run_job(kernel: "Kernel", *, ident: dict[str, Any], spec: dict[str, Any], runId: str | None = None,
                        record: bool = False, captureTrace: bool = True) -> dict[str, Any]:
    from gofannon.services import runs

    return await runs.run_job(kernel, runs.identity_from(ident), spec, run_id=runId, record=record,
                              capture_trace=captureTrace)
