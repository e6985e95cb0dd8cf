"""Bundled plugin ``openapi``: fetch OpenAPI 3.x / Swagger 2.0 specs through the SSRF guard and describe their
operations for the composer (``kernel.tool_connectors["openapi"]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy
from yarl import URL

from gofannon import net
from gofannon.errors import BadRequest, Unprocessable, UpstreamError

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel
    from gofannon.settings import Settings

hookimpl = pluggy.HookimplMarker("gofannon")

DEFAULT_NAME = "spec_from_url.json"
ACCEPT = "application/json, application/yaml, application/x-yaml, text/yaml, text/plain;q=0.9, */*;q=0.5"


def spec_name(url: str) -> str:
    """The last path segment of the URL, or ``spec_from_url.json`` (as the reference names it)."""
    try:
        path = URL(url).path
    except ValueError:
        return DEFAULT_NAME
    if not path or path.endswith("/"):
        return DEFAULT_NAME
    return path.rsplit("/", 1)[-1] or DEFAULT_NAME


class OpenApiConnector:
    name = "openapi"

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings

    async def fetch_spec(self, kernel: "Kernel", url: str) -> dict[str, str]:
        """``{name, content}`` of the spec at ``url``: 400 refused/bad URL, 502/504 remote failures, 422 not a spec."""
        text = (url or "").strip()
        if not (text.lower().startswith("http://") or text.lower().startswith("https://")):
            raise BadRequest(f"Error fetching from URL: the URL must start with http:// or https:// (got {url!r})")
        resp = await net.fetch(kernel, "GET", text, headers={"Accept": ACCEPT})
        if not resp.ok:
            snippet = resp.text()[:200].strip()
            more = f": {snippet}" if snippet else ""
            raise UpstreamError(f"Fetching the spec failed: {text} answered HTTP {resp.status}{more}")
        content = resp.text()
        from gofannon_plugins.tools.openapi import parser  # lazy: YAML and the parser only when used

        try:
            parser.parse_spec(content)
        except parser.SpecError as exc:
            raise Unprocessable(f"The content at {text} is not an OpenAPI 3.x or Swagger 2.0 spec: {exc}") from None
        return {"name": spec_name(text), "content": content}

    def operations(self, content: str) -> list[dict[str, Any]]:
        """The spec's operations as dicts (``operationId, method, path, baseUrl, parameters, requestBodySchema``)."""
        from gofannon_plugins.tools.openapi import parser

        return [op.as_dict() for op in parser.operations(content)]

    def tool_doc(self, name: str, content: str) -> str:
        """Markdown describing the spec's operations, for the composer prompt."""
        from gofannon_plugins.tools.openapi import parser

        return parser.tool_doc(name, content)


@hookimpl
def register_tool_connectors(register: Callable[..., None], settings: "Settings") -> None:
    register(OpenApiConnector(settings))
