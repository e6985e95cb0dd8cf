"""``gofannon worker``: RQ worker. (Not built yet.)"""

from typing import Any


def run_worker(settings: Any, *, burst: bool = False, name: str | None = None) -> int:
    raise SystemExit("gofannon worker is not built yet")
