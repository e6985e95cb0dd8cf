"""The JSON text the API answers with: compact, UTF-8 as is, no NaN, and ``str()`` of what JSON cannot hold.
One definition below the web layer, so services that cache encoded answers (``GET /agents``) encode alike."""

from __future__ import annotations

import json
from typing import Any


#: One encoder for every answer (``json.dumps`` with options builds a new one per call).
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str).encode


def dumps(data: Any) -> str:
    return _encode(data)
