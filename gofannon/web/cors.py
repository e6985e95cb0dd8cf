"""Cross-origin access beyond the web UI's: browser-based MCP clients (docs/mcp-server.md "Browser clients").

``FRONTEND_URL``'s origin may call every route with credentials (the middleware's own rule). Two more, without
credentials (a bearer token in a header, never the session cookie):

- ``/mcp`` for the origins the MCP server accepts (``mcp_origin_allowed``): the kernel's own, ``FRONTEND_URL``'s,
  those listed in ``GOFANNON_MCP_ALLOWED_ORIGINS``, and loopback ones when ``APP_ENV`` is local/dev/test. The
  same list is the server's DNS-rebinding guard, so a page of any other site can neither read nor drive it.
- the OAuth discovery documents and the token, registration and revocation endpoints, for any origin: they
  answer only to what the request itself carries (a code and its PKCE verifier, a token), as a browser-based
  OAuth client needs (RFC 8414 and RFC 9728 documents are public).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web

    from gofannon.settings import Settings

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
DEV_ENVS = frozenset({"local", "dev", "development", "test"})
OPEN_PATHS = frozenset({"/oauth/token", "/oauth/register", "/oauth/revoke"})
MCP_EXPOSED = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased; "" for one that does not parse (``http://[``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_mcp_origins(settings: "Settings") -> frozenset[str]:
    raw = settings.mcp_allowed_origins or ""
    return frozenset(origin_of(o.strip()) if o.strip() != "*" else "*" for o in raw.split(",") if o.strip())


def mcp_origin_allowed(settings: "Settings", own_origin: str, origin: str) -> bool:
    """Whether a browser page of ``origin`` may use ``/mcp`` (``own_origin``: the kernel's, as clients see it)."""
    wanted = origin.strip().lower()
    if wanted in (origin_of(own_origin), origin_of(settings.frontend_url)):
        return True
    listed = allowed_mcp_origins(settings)
    if "*" in listed or wanted in listed:
        return True
    try:
        parts = urlsplit(wanted)
        host = parts.hostname
    except ValueError:  # not a URL at all: not an origin anyone allowed
        return False
    return settings.app_env.lower() in DEV_ENVS and parts.scheme in ("http", "https") and host in LOOPBACK


def cross_origin_headers(request: "web.Request", origin: str) -> dict[str, str] | None:
    """The CORS headers a request from ``origin`` (not ``FRONTEND_URL``'s) gets on this path, or None."""
    path = request.path
    if path == "/mcp":
        from gofannon.web.common import kernel_of, public_origin

        if not mcp_origin_allowed(kernel_of(request).settings, public_origin(request), origin):
            return None
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Expose-Headers": MCP_EXPOSED}
    if path in OPEN_PATHS or path.startswith("/.well-known/oauth-"):
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "WWW-Authenticate"}
    return None
