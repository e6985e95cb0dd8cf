"""``GET /openapi.json`` built from the live route table, and ``GET /docs`` that renders it.

The document is derived, not written: every route the app has (kernel modules and plugins alike)
appears, described by its handler's ``@api_doc`` metadata and docstring, with request bodies as the
pydantic models' JSON schemas under ``components``. It is built once per app, on first request, so
routes added by plugins at start-up are included and nothing is paid at import.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from gofannon.web.common import api_doc, is_public, public
from gofannon.web.middleware import is_catch_all

routes = web.RouteTableDef()

_CACHE: web.AppKey[dict[str, Any]] = web.AppKey("gofannon_openapi", dict)
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_REF = "#/components/schemas/{model}"

_VALIDATION_ERROR = {
    "title": "ValidationError",
    "type": "object",
    "required": ["type", "loc", "msg"],
    "properties": {
        "type": {"type": "string"},
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "input": {},
        "ctx": {"type": "object"},
    },
}
_HTTP_VALIDATION_ERROR = {
    "title": "HTTPValidationError",
    "type": "object",
    "properties": {"detail": {"type": "array", "items": {"$ref": _REF.format(model="ValidationError")}}},
}
_ERROR = {"title": "Error", "type": "object", "properties": {"detail": {}}, "required": ["detail"]}
#: What every error under /v1 answers (gofannon.web.v1): OpenAI's shape, so its SDKs raise the right exception.
_OPENAI_ERROR = {
    "title": "OpenAIError",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}},
    }},
}
#: The errors a /v1 route may answer, besides a bad body (400) and the missing token (401).
_OPENAI_STATUSES = {
    "403": "The token may not use this model",
    "404": "No such model (model_not_found)",
    "429": "Rate limit (rate_limit_exceeded, with Retry-After) or spend exhausted (insufficient_quota)",
    "5XX": "The provider or the agent failed (502), is unreachable (503) or too slow (504)",
}


class _Schemas:
    """Collects component schemas; each pydantic model (and what it nests) is written once."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {
            "Error": _ERROR, "ValidationError": _VALIDATION_ERROR, "HTTPValidationError": _HTTP_VALIDATION_ERROR,
            "OpenAIError": _OPENAI_ERROR,
        }

    def ref(self, tp: Any, mode: str) -> dict[str, Any]:
        from pydantic import BaseModel, TypeAdapter

        if isinstance(tp, dict):  # a literal JSON schema
            return tp
        schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        self.components.update(schema.pop("$defs", {}))
        if inspect.isclass(tp) and issubclass(tp, BaseModel):
            name = tp.__name__
            self.components[name] = schema
            return {"$ref": _REF.format(model=name)}
        return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(method: str, path: str, handler: Any, schemas: _Schemas, op_ids: set[str]) -> dict[str, Any]:
    doc = getattr(handler, "_gofannon_doc", None) or {}
    name = getattr(handler, "__name__", "handler")
    module = (getattr(handler, "__module__", "") or "").rsplit(".", 1)[-1]
    op_id = f"{module}_{name}_{method.lower()}"
    while op_id in op_ids:
        op_id += "_"
    op_ids.add(op_id)
    op: dict[str, Any] = {"operationId": op_id}
    summary = doc.get("summary")
    if summary:
        op["summary"] = summary
    description = inspect.getdoc(handler)
    if description:
        op["description"] = description
    tags = doc.get("tags") or ([module] if module else [])
    if tags:
        op["tags"] = list(tags)
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in _PARAM.findall(path)]
    if params:
        op["parameters"] = params
    status = str(doc.get("status") or 200)
    ok: dict[str, Any] = {"description": "Successful Response"}
    if doc.get("response") is not None:
        ok["content"] = _json(schemas.ref(doc["response"], "serialization"))
    elif status != "204":
        ok["content"] = _json({})
    responses: dict[str, Any] = {status: ok}
    openai = path.startswith("/v1/")
    error = _json({"$ref": _REF.format(model="OpenAIError" if openai else "Error")})
    if doc.get("body") is not None:
        op["requestBody"] = {"required": True, "content": _json(schemas.ref(doc["body"], "validation"))}
        if openai:
            responses["400"] = {"description": "Invalid request (invalid_request_error)", "content": error}
        else:
            responses["422"] = {"description": "Validation Error",
                                "content": _json({"$ref": _REF.format(model="HTTPValidationError")})}
    if is_public(handler):
        op["security"] = []
    else:
        responses["401"] = {"description": "Not authenticated", "content": error}
    if openai:
        responses.update({code: {"description": what, "content": error} for code, what in _OPENAI_STATUSES.items()})
    op["responses"] = responses
    return op


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route ``app`` serves (HEAD twins of GET routes left out)."""
    from gofannon import __version__

    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    op_ids: set[str] = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD" or is_catch_all(resource):
            continue
        path = _PARAM.sub(r"{\1}", resource.canonical)
        method = "get" if route.method == "*" else route.method.lower()
        paths.setdefault(path, {})[method] = _operation(method, path, route.handler, schemas, op_ids)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gofannon user-service",
            "version": __version__,
            "description": "The Gofannon agent platform API. Authenticate with the `gofannon_sid` session "
                           "cookie (browser login) or `Authorization: Bearer <personal API token>`.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "gofannon_sid"},
                "bearerToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"sessionCookie": []}, {"bearerToken": []}],
    }


@routes.get("/openapi.json")
@public
@api_doc(summary="This API's OpenAPI 3.1 document, generated from the route table", tags=["meta"])
async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[_CACHE]
    if "doc" not in cache:
        cache["doc"] = build_openapi(request.app)
    return web.json_response(cache["doc"])


def setup(app: web.Application) -> None:
    app[_CACHE] = {}  # filled on first request, once every route (plugins' too) is in place


@routes.get("/docs")
@public
@api_doc(summary="A page that renders /openapi.json (self-contained, no CDN)", tags=["meta"])
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS_HTML, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                 "script-src 'unsafe-inline'"})


_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Gofannon API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{max-width:1000px;margin:0 auto;padding:16px 24px}
input{width:100%;padding:8px;font-size:15px;box-sizing:border-box;margin-bottom:12px}
h2{font-size:17px;margin:22px 0 8px;text-transform:capitalize}
details{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:6px 0}
summary{cursor:pointer;padding:8px 10px;display:flex;gap:10px;align-items:baseline}
.m{font:600 12px monospace;padding:2px 6px;border-radius:4px;color:#fff;min-width:52px;text-align:center}
.get{background:#2f7dd1}.post{background:#2e9e5b}.put{background:#c98a12}.delete{background:#c8413b}.patch{background:#7a56c2}
.p{font-family:monospace}.s{color:#5a6272}.lock{color:#8a6d00;font-size:12px}
.body{padding:4px 14px 12px}pre{background:#f0f2f5;padding:8px;overflow:auto;font-size:12px;border-radius:4px}
</style></head><body>
<header><h1 id="title">Gofannon API</h1><div id="sub"></div></header>
<main><input id="q" placeholder="Filter by path, method or summary" aria-label="filter"><div id="ops">Loading…</div></main>
<script>
(function () {
  "use strict";
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function resolve(spec, schema) {
    var ref = schema && schema.$ref;
    if (!ref) return schema;
    return spec.components.schemas[ref.split("/").pop()] || schema;
  }
  function render(spec) {
    document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
    document.getElementById("sub").textContent = spec.info.description || "";
    var byTag = {};
    Object.keys(spec.paths).forEach(function (path) {
      Object.keys(spec.paths[path]).forEach(function (method) {
        var op = spec.paths[path][method];
        var tag = (op.tags && op.tags[0]) || "other";
        (byTag[tag] = byTag[tag] || []).push({path: path, method: method, op: op});
      });
    });
    var root = document.getElementById("ops");
    root.textContent = "";
    Object.keys(byTag).sort().forEach(function (tag) {
      var section = el("section");
      section.appendChild(el("h2", "", tag));
      byTag[tag].forEach(function (item) {
        var d = el("details");
        d.dataset.search = (item.method + " " + item.path + " " + (item.op.summary || "")).toLowerCase();
        var s = el("summary");
        s.appendChild(el("span", "m " + item.method, item.method.toUpperCase()));
        s.appendChild(el("span", "p", item.path));
        s.appendChild(el("span", "s", item.op.summary || ""));
        if (!item.op.security || item.op.security.length) s.appendChild(el("span", "lock", "auth"));
        d.appendChild(s);
        var body = el("div", "body");
        if (item.op.description) body.appendChild(el("p", "", item.op.description));
        (item.op.parameters || []).forEach(function (p) {
          body.appendChild(el("div", "p", p.in + " parameter: " + p.name));
        });
        var rb = item.op.requestBody;
        if (rb) {
          body.appendChild(el("strong", "", "Request body"));
          var schema = resolve(spec, rb.content["application/json"].schema);
          body.appendChild(el("pre", "", JSON.stringify(schema, null, 2)));
        }
        body.appendChild(el("div", "s", "Responses: " + Object.keys(item.op.responses).join(", ")));
        d.appendChild(body);
        section.appendChild(d);
      });
      root.appendChild(section);
    });
  }
  document.getElementById("q").addEventListener("input", function (ev) {
    var q = ev.target.value.toLowerCase();
    document.querySelectorAll("details").forEach(function (d) {
      d.style.display = d.dataset.search.indexOf(q) >= 0 ? "" : "none";
    });
  });
  fetch("openapi.json", {credentials: "same-origin"})
    .then(function (r) { return r.json(); })
    .then(render)
    .catch(function (e) { document.getElementById("ops").textContent = "Could not load openapi.json: " + e; });
})();
</script></body></html>
"""
