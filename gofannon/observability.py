"""Observability events: redacted, logged, and handed to ``record_event`` plugins."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.events")

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("api_token", re.compile(r"\bgft_[0-9a-f]{32}_[A-Za-z0-9_\-]{20,}")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b")),
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{10,}")),
    ("openai_key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{16,}")),
    ("aws_key_id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("google_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}")),
    ("slack_token", re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}")),
    ("stripe_key", re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
    ("private_key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)")),
    ("secret", re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)\b(\s*[=:]\s*)([^\s,;\"']{6,})")),
]
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def redact(text: str) -> str:
    for kind, pattern in _PATTERNS:
        if kind == "secret":
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED:{kind}]", text)
        else:
            text = pattern.sub(f"[REDACTED:{kind}]", text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return redact(str(value))


def record(kernel: "Kernel", event_type: str, message: str = "", *, level: str = "INFO",
           user_id: str | None = None, service: str = "user-service", metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    event = {
        "timestamp": now_iso(),
        "level": str(level).upper(),
        "eventType": event_type,
        "service": service,
        "userId": user_id,
        "message": redact(str(message)),
        "metadata": _clean(metadata or {}),
    }
    py_level = _LEVELS.get(event["level"], 20)
    if log.isEnabledFor(py_level):
        log.log(py_level, "%s %s", event_type, json.dumps(event, default=str))
    try:
        kernel.pm.hook.record_event(event=event)
    except Exception:  # noqa: BLE001 - a broken sink must not break the request
        log.exception("record_event plugin failed")
    return event
