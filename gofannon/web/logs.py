"""``POST /log/client``: the web UI's log lines (wire contract §1.2; DECISIONS.md "/log/client").

No login needed (the UI logs before sign-in), so the endpoint is bounded: a body cap
(``GOFANNON_LOG_CLIENT_MAX_BYTES`` → 413) and a per-client-address rate in the shared store
(``GOFANNON_LOG_CLIENT_PER_MINUTE`` → 429). The event goes to the ``record_event`` hook with
``service="webui"``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gofannon.errors import PayloadTooLarge, TooManyRequests, Unprocessable
from gofannon.jsontext import loads
from gofannon.models import WireModel
from gofannon.services import ratelimit
from gofannon.web.common import api_doc, json_response, kernel_of, optional_identity, public, validate

routes = web.RouteTableDef()


class ClientLogPayload(WireModel):
    event_type: str
    message: str
    level: str = "INFO"
    metadata: dict[str, Any] | None = None


async def _read_capped(request: web.Request, cap: int) -> bytes:
    """The body, refusing (413) as soon as it exceeds ``cap`` — declared or chunked."""
    too_large = PayloadTooLarge(f"Log entry too large (limit {cap} bytes)")
    if request.content_length is not None and request.content_length > cap:
        raise too_large
    data = bytearray()
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > cap:
            raise too_large


@routes.post("/log/client")
@public
@api_doc(summary="Record a client-side log event (no login needed; size-capped, rate-limited per address)",
         body=ClientLogPayload, status=202, tags=["logging"])
async def log_client(request: web.Request) -> web.Response:
    kernel = kernel_of(request)
    settings = kernel.settings
    raw = await _read_capped(request, settings.log_client_max_bytes)
    client_host = request.remote or "unknown"
    if not await ratelimit.admit(kernel, f"log_client:{client_host}", settings.log_client_per_minute):
        raise TooManyRequests("Too many client log entries from this address; try again in a minute",
                              headers={"Retry-After": "60"})
    if not raw.strip():
        raise Unprocessable([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unprocessable([{"type": "json_invalid", "loc": ["body", getattr(exc, "pos", 0)],
                              "msg": "JSON decode error", "input": {},
                              "ctx": {"error": getattr(exc, "msg", str(exc))}}]) from None
    payload = validate(ClientLogPayload, data)
    metadata = dict(payload.metadata or {})
    metadata["client_host"] = client_host
    metadata["user_agent"] = request.headers.get("User-Agent")
    ident = optional_identity(request)
    kernel.record(payload.event_type, payload.message, level=payload.level,
                  user_id=ident.uid if ident is not None else "anonymous", service="webui", metadata=metadata)
    return json_response({"status": "logged"}, status=202)
