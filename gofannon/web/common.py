"""What every handler uses: body parsing with the wire's 422 shape, the caller, JSON responses."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gofannon.errors import Forbidden, PayloadTooLarge, Unauthorized, Unprocessable, UnsupportedMediaType
from gofannon.jsontext import dumps, dumps_bytes, loads  # noqa: F401 - the handlers' encoder, re-exported
from gofannon.services.identity import SESSION_COOKIE
from gofannon.web.keys import KERNEL

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

M = TypeVar("M", bound=BaseModel)
H = TypeVar("H", bound=Callable[..., Any])

try:
    IDENTITY_KEY: Any = web.RequestKey("gofannon_identity", object)
except AttributeError:  # pragma: no cover - aiohttp < 3.14
    IDENTITY_KEY = "gofannon_identity"


# -- route metadata -----------------------------------------------------------------------------------
def public(handler: H) -> H:
    """Mark a handler as reachable without credentials."""
    handler._gofannon_public = True  # type: ignore[attr-defined]
    return handler


def api_doc(*, summary: str | None = None, body: type[BaseModel] | None = None,
            response: Any = None, status: int = 200, tags: list[str] | None = None) -> Callable[[H], H]:
    """Describe a handler for ``/openapi.json``."""

    def deco(handler: H) -> H:
        handler._gofannon_doc = {  # type: ignore[attr-defined]
            "summary": summary, "body": body, "response": response, "status": status, "tags": tags or [],
        }
        return handler

    return deco


def is_public(handler: Any) -> bool:
    return bool(getattr(handler, "_gofannon_public", False))


def model_call(handler: H) -> H:
    """Mark a handler that calls models (or runs agents) as one a token limited to ``models`` may reach with a
    write method: it checks the token's models itself. Every other write refuses such a token (see the
    pipeline), so it cannot make or change the agents it may call into a way around its list."""
    handler._gofannon_model_call = True  # type: ignore[attr-defined]
    return handler


def is_model_call(handler: Any) -> bool:
    return bool(getattr(handler, "_gofannon_model_call", False))


# -- request helpers ----------------------------------------------------------------------------------
def public_origin(request: web.Request) -> str:
    """The kernel's origin as its clients see it: ``GOFANNON_PUBLIC_URL`` when set (behind a proxy that
    terminates TLS the request itself says ``http``), else the request's scheme and ``Host``."""
    configured = request.app[KERNEL].settings.public_url
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


def kernel_of(request: web.Request) -> "Kernel":
    return request.app[KERNEL]


def identity(request: web.Request) -> "Identity":
    """The authenticated caller; 401 when there is none."""
    ident = request.get(IDENTITY_KEY)
    if ident is None:
        raise Unauthorized("Not authenticated. Session cookie missing or invalid.", reason="not_authenticated")
    return ident  # type: ignore[no-any-return]


def optional_identity(request: web.Request) -> "Identity | None":
    return request.get(IDENTITY_KEY)


def require_site_admin(request: web.Request) -> "Identity":
    ident = identity(request)
    if not ident.is_site_admin:
        raise Forbidden("Site admin access required")
    return ident


def _jsonable_ctx(ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in ctx.items():
        if isinstance(v, BaseException):
            out[k] = {}
        else:
            try:
                json.dumps(v)
                out[k] = v
            except TypeError:
                out[k] = str(v)
    return out


def validation_errors(exc: ValidationError, prefix: tuple[Any, ...] = ("body",)) -> list[dict[str, Any]]:
    """A pydantic error list in FastAPI's wire form: ``type, loc, msg, input[, ctx]``."""
    out = []
    for err in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": err["type"],
            "loc": [*prefix, *err["loc"]],
            "msg": err["msg"],
            "input": err.get("input"),
        }
        if "ctx" in err:
            item["ctx"] = _jsonable_ctx(err["ctx"])
        out.append(item)
    return out


def _json_media_type(value: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters (a charset) aside."""
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The request body as JSON; 422 in the wire's shape when it is missing or malformed. With the session cookie,
    415 when it is declared as something else: ``text/plain`` and form bodies are what a page of another origin
    can make a browser send with the cookie and no CORS preflight, so such a body is never taken for JSON (the
    pipeline also refuses writes from other origins that carry the cookie). A script's request (a bearer token,
    no cookie) may declare any type, as ``curl -d`` does; a body without a ``Content-Type`` is read as JSON."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"Request body too large (limit {request.client_max_size} bytes)") from None
    if not raw.strip():
        if not required:
            return None
        raise Unprocessable([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    declared = request.headers.get("Content-Type")
    if declared is not None and SESSION_COOKIE in request.cookies and not _json_media_type(declared):
        raise UnsupportedMediaType(f"The body must be JSON, sent as Content-Type: application/json (not "
                                   f"{declared.split(';', 1)[0].strip()[:100]!r})")
    try:
        return loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0)
        raise Unprocessable([{
            "type": "json_invalid", "loc": ["body", pos], "msg": "JSON decode error", "input": {},
            "ctx": {"error": getattr(exc, "msg", str(exc))},
        }]) from None


def validate(model: type[M], data: Any, prefix: tuple[Any, ...] = ("body",)) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable(validation_errors(exc, prefix)) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json(request))


def query_model(request: web.Request, model: type[M]) -> M:
    return validate(model, dict(request.query), ("query",))


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps_bytes(data), status=status, content_type="application/json", charset="utf-8",
                        headers=headers)


def no_content() -> web.Response:
    return web.Response(status=204)
