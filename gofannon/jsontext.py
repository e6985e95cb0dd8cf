"""The JSON text the API answers with: compact, UTF-8 as is, no NaN, and ``str()`` of what JSON cannot hold.
One definition below the web layer, so services that cache encoded answers (``GET /agents``) encode alike.

``encoder`` builds a compact encoding function once: ``json.dumps`` (and ``JSONEncoder.encode``) build the C
encoder anew for every call, which is a third of the cost of encoding a small object.
"""

from __future__ import annotations

import json
from json import encoder as _stdlib
from typing import Any, Callable


def encoder(*, ensure_ascii: bool, allow_nan: bool = True, default: Callable[[Any], Any] | None = None
            ) -> Callable[[Any], str]:
    """A function encoding like ``json.dumps(obj, separators=(",", ":"), ensure_ascii=..., allow_nan=...,
    default=...)``, without its per-call set-up. (It does not look for reference cycles: a cyclic object is a
    ``RecursionError`` instead of a ``ValueError``; nothing the kernel encodes is cyclic.)"""
    make = getattr(_stdlib, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python without the C accelerator
        return json.JSONEncoder(ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=(",", ":"),
                                default=default).encode
    strings = _stdlib.encode_basestring_ascii if ensure_ascii else _stdlib.encode_basestring
    chunks = make(None, default or _refuse, strings, None, ":", ",", False, False, allow_nan)

    def encode(obj: Any) -> str:
        return "".join(chunks(obj, 0))

    return encode


def _refuse(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


#: The API's answers: UTF-8 as is, no NaN, ``str()`` of anything else.
dumps = encoder(ensure_ascii=False, allow_nan=False, default=str)
