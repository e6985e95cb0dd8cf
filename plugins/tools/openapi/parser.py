"""OpenAPI 3.x and Swagger 2.0: recognise and check a document, and turn it into callable operations.

The composer's prompt describes each operation (id, method, path, base URL, parameters, JSON request body)
so generated agents can call the API with ``http_client``. Checks are structural (the fields a usable spec
must have), which is what tells a spec from an arbitrary JSON/YAML page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from gofannon.jsontext import local_ref

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_OPERATIONS = 2000
_UNRESOLVED = object()
_OPENAPI3 = re.compile(r"^3\.\d+(\.\d+)?(-[\w.]+)?$")


class SpecError(ValueError):
    """The text is not a usable OpenAPI/Swagger document; the message says why."""


@dataclass
class Parameter:
    name: str
    location: str
    required: bool
    description: str
    schema: dict[str, Any]


@dataclass
class Operation:
    operation_id: str
    method: str
    path: str
    base_url: str
    summary: str
    description: str
    parameters: list[Parameter] = field(default_factory=list)
    request_body_schema: dict[str, Any] | None = None
    request_body_required: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "operationId": self.operation_id, "method": self.method.upper(), "path": self.path,
            "baseUrl": self.base_url, "summary": self.summary, "description": self.description,
            "parameters": [p.__dict__ for p in self.parameters],
            "requestBodySchema": self.request_body_schema, "requestBodyRequired": self.request_body_required,
        }


def load_document(text: str) -> Any:
    """JSON first, then YAML (safe loader); SpecError when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"the content is not valid JSON or YAML ({str(exc).splitlines()[0]})") from None


def spec_version(doc: Any) -> str:
    """``"openapi-3"`` or ``"swagger-2"`` after checking the document's structure; SpecError otherwise."""
    if not isinstance(doc, dict):
        raise SpecError("the content is not a JSON/YAML object with 'openapi' or 'swagger' at the top")
    problems: list[str] = []
    if "openapi" in doc:
        kind = "openapi-3"
        if not isinstance(doc["openapi"], str) or not _OPENAPI3.match(doc["openapi"]):
            problems.append(f"'openapi' must be a 3.x version string, got {doc['openapi']!r}")
        has_paths = isinstance(doc.get("paths"), dict)
        minor_1 = isinstance(doc["openapi"], str) and doc["openapi"].startswith("3.1")
        if not has_paths and not (minor_1 and (isinstance(doc.get("components"), dict)
                                               or isinstance(doc.get("webhooks"), dict))):
            problems.append("'paths' must be an object")
    elif "swagger" in doc:
        kind = "swagger-2"
        if str(doc["swagger"]) != "2.0":
            problems.append(f"'swagger' must be \"2.0\", got {doc['swagger']!r}")
        if not isinstance(doc.get("paths"), dict):
            problems.append("'paths' must be an object")
    else:
        raise SpecError("the document has neither an 'openapi' nor a 'swagger' field")
    info = doc.get("info")
    if not isinstance(info, dict):
        problems.append("'info' must be an object")
    else:
        if not isinstance(info.get("title"), str):
            problems.append("'info.title' must be a string")
        if "version" not in info:
            problems.append("'info.version' is missing")
    paths = doc.get("paths")
    if isinstance(paths, dict):
        for key, item in list(paths.items())[:MAX_OPERATIONS]:
            if not isinstance(key, str) or not key.startswith("/"):
                problems.append(f"path {key!r} must start with '/'")
            elif not isinstance(item, dict):
                problems.append(f"path {key!r} must map to an object")
            if len(problems) > 5:
                break
    if problems:
        label = "OpenAPI 3.x" if kind == "openapi-3" else "Swagger 2.0"
        raise SpecError(f"not a valid {label} document: " + "; ".join(problems))
    return kind


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    doc = load_document(text)
    return spec_version(doc), doc


def _resolve(doc: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """Inline local ``$ref``s (``#/...``) to a bounded depth; remote refs are left as they are."""
    if depth > 6:
        return node
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = local_ref(doc, ref, missing=_UNRESOLVED)
            return node if target is _UNRESOLVED else _resolve(doc, target, depth + 1)
        return {k: _resolve(doc, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(doc, v, depth + 1) for v in node]
    return node


def base_url(kind: str, doc: dict[str, Any]) -> str:
    if kind == "openapi-3":
        servers = doc.get("servers")
        if isinstance(servers, list) and servers and isinstance(servers[0], dict):
            url = str(servers[0].get("url") or "")
            for name, var in (servers[0].get("variables") or {}).items():
                if isinstance(var, dict) and "default" in var:
                    url = url.replace("{" + str(name) + "}", str(var["default"]))
            return url.rstrip("/")
        return ""
    host = doc.get("host")
    if not host:
        return str(doc.get("basePath") or "").rstrip("/")
    schemes = doc.get("schemes") or ["https"]
    return f"{schemes[0]}://{host}{doc.get('basePath') or ''}".rstrip("/")


def _parameter(doc: dict[str, Any], raw: Any) -> Parameter | None:
    p = _resolve(doc, raw)
    if not isinstance(p, dict) or "name" not in p:
        return None
    schema = p.get("schema")
    if not isinstance(schema, dict):  # Swagger 2.0 keeps type information on the parameter itself
        schema = {k: p[k] for k in ("type", "format", "items", "enum", "default") if k in p}
    return Parameter(name=str(p["name"]), location=str(p.get("in", "query")), required=bool(p.get("required")),
                     description=str(p.get("description") or ""), schema=schema)


def operations(text_or_doc: str | dict[str, Any]) -> list[Operation]:
    """Every operation of the spec, in document order (at most MAX_OPERATIONS)."""
    if isinstance(text_or_doc, str):
        kind, doc = parse_spec(text_or_doc)
    else:
        doc = text_or_doc
        kind = spec_version(doc)
    base = base_url(kind, doc)
    out: list[Operation] = []
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        shared = [x for x in (item.get("parameters") or []) if x is not None]
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params: dict[tuple[str, str], Parameter] = {}
            body_schema: dict[str, Any] | None = None
            body_required = False
            for raw in [*shared, *(op.get("parameters") or [])]:
                param = _parameter(doc, raw)
                if param is None:
                    continue
                if param.location == "body":
                    body_schema, body_required = _resolve(doc, param.schema), param.required
                    continue
                params[(param.name, param.location)] = param
            body = _resolve(doc, op.get("requestBody")) if "requestBody" in op else None
            if isinstance(body, dict):
                content = body.get("content") or {}
                media = next((content[m] for m in content if "json" in m), None) or next(iter(content.values()), None)
                if isinstance(media, dict) and isinstance(media.get("schema"), dict):
                    body_schema = media["schema"]
                body_required = bool(body.get("required"))
            op_id = op.get("operationId") or f"{method.upper()}_{path}"
            out.append(Operation(
                operation_id=str(op_id), method=method, path=str(path), base_url=base,
                summary=str(op.get("summary") or ""), description=str(op.get("description") or ""),
                parameters=list(params.values()), request_body_schema=body_schema, request_body_required=body_required,
            ))
            if len(out) >= MAX_OPERATIONS:
                return out
    return out


def tool_doc(spec_name: str, text: str) -> str:
    """A markdown section describing the spec's operations for the composer prompt."""
    try:
        kind, doc = parse_spec(text)
        ops = operations(doc)
    except SpecError as exc:
        return f"### API spec `{spec_name}`\n(The spec could not be read: {exc}.)"
    title = (doc.get("info") or {}).get("title") or spec_name
    base = base_url(kind, doc) or "(no base URL in the spec: ask for it in input_dict)"
    lines = [f"### API `{title}` (spec `{spec_name}`)", f"Base URL: `{base}`", ""]
    for op in ops:
        lines.append(f"#### `{op.operation_id}`")
        text_desc = op.summary or op.description
        if text_desc:
            lines.append(text_desc.strip())
        lines.append(f"- Endpoint: `{op.method.upper()} {op.base_url}{op.path}`")
        if op.parameters:
            lines.append("- Parameters:")
            for p in op.parameters:
                req = "required" if p.required else "optional"
                typ = p.schema.get("type", "any") if isinstance(p.schema, dict) else "any"
                desc = f": {p.description}" if p.description else ""
                lines.append(f"  - `{p.name}` (in {p.location}, {typ}, {req}){desc}")
        if op.request_body_schema is not None:
            schema = json.dumps(op.request_body_schema, indent=2, default=str)
            if len(schema) > 4000:
                schema = schema[:4000] + "\n... (truncated)"
            req = "required" if op.request_body_required else "optional"
            lines.append(f"- JSON request body ({req}), schema:\n```json\n{schema}\n```")
        lines.append(f"- Call: `response = await http_client.request(\"{op.method.upper()}\", \"{op.base_url}{op.path}\""
                     ", params={...}, json={...})` (fill in path parameters), then `response.json()`.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
