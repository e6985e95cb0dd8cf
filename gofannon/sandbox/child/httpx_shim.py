"""The ``httpx`` agent code gets in the child: a small, httpx-compatible client over the host's channel.

The child has no network; every request is an ``http.request`` op that the host performs behind its SSRF guard.
Covered: ``AsyncClient`` (``get/post/put/patch/delete/head/options/request``, ``base_url``, ``params``,
``headers``, ``json``, ``content``, ``data``, ``timeout``, ``follow_redirects``, ``async with``), ``Response``
and httpx's error classes. Standard library only.
"""

import base64
import json
import types
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urljoin

from .channel import AGENT_MODULE, HTTPException


def _make_httpx(call: Callable[[str, dict], Awaitable[Any]]) -> types.ModuleType:
    """A module named ``httpx`` whose AsyncClient sends every request through the host (its SSRF guard).

    ``call`` is the run's op channel (``Runtime.call``): ``http.request`` is answered by the host. (The name
    keeps its underscore because agents see it in the classes' qualified names, e.g. in tracebacks.)
    """
    mod = types.ModuleType("httpx")

    class HTTPError(Exception):
        pass

    class RequestError(HTTPError):
        pass

    class ConnectError(RequestError):
        pass

    class TimeoutException(RequestError):
        pass

    class HTTPStatusError(HTTPError):
        def __init__(self, message, *, request=None, response=None):
            super().__init__(message)
            self.request, self.response = request, response

    class Headers(dict):
        """Case-insensitive lookups over the response headers."""

        def __init__(self, items=()):
            super().__init__()
            for k, v in (items.items() if isinstance(items, dict) else items):
                super().__setitem__(str(k).lower(), v)

        def __getitem__(self, key):
            return super().__getitem__(str(key).lower())

        def get(self, key, default=None):
            return super().get(str(key).lower(), default)

        def __contains__(self, key):
            return super().__contains__(str(key).lower())

    class Timeout:
        def __init__(self, timeout=None, **kw):
            self.timeout = timeout if not isinstance(timeout, Timeout) else timeout.timeout

    class Response:
        def __init__(self, status_code=200, headers=None, content=b"", url="", text=None, json=None):
            self.status_code = int(status_code)
            self.headers = Headers(headers or {})
            if json is not None:
                content = _json_dumps(json).encode()
            elif text is not None:
                content = text.encode()
            self.content = content or b""
            self.url = url
            self.request = None

        @property
        def text(self):
            ctype = self.headers.get("content-type", "")
            charset = "utf-8"
            if "charset=" in ctype:
                charset = ctype.split("charset=", 1)[1].split(";")[0].strip() or "utf-8"
            try:
                return self.content.decode(charset, errors="replace")
            except LookupError:
                return self.content.decode("utf-8", errors="replace")

        def json(self, **kw):
            return json.loads(self.content or b"null", **kw)

        @property
        def is_success(self):
            return 200 <= self.status_code < 300

        @property
        def is_error(self):
            return self.status_code >= 400

        @property
        def reason_phrase(self):
            import http

            try:
                return http.HTTPStatus(self.status_code).phrase
            except ValueError:
                return ""

        def raise_for_status(self):
            if self.status_code < 400:
                return self
            kind = "Client error" if self.status_code < 500 else "Server error"
            raise HTTPStatusError(f"{kind} '{self.status_code} {self.reason_phrase}' for url '{self.url}'",
                                  response=self)

        async def aread(self):
            return self.content

        def __repr__(self):
            return f"<Response [{self.status_code} {self.reason_phrase}]>"

    def _json_dumps(value):
        return json.dumps(value)

    class AsyncClient:
        def __init__(self, *, base_url="", headers=None, params=None, timeout=None, follow_redirects=False,
                     **_ignored):
            self.base_url = str(base_url or "")
            self.headers = dict(headers or {})
            self.params = dict(params or {})
            self.timeout = timeout.timeout if isinstance(timeout, Timeout) else timeout
            self.follow_redirects = follow_redirects
            self.is_closed = False

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            await self.aclose()

        async def aclose(self):
            self.is_closed = True

        async def request(self, method, url, *, params=None, headers=None, content=None, data=None, json=None,
                          files=None, timeout=None, follow_redirects=None, **_ignored):
            if files is not None:
                raise NotImplementedError("file uploads are not supported by the sandbox http client")
            url = str(url)
            if self.base_url and not url.startswith(("http://", "https://")):
                url = urljoin(self.base_url.rstrip("/") + "/", url.lstrip("/"))
            hdrs = {**self.headers, **dict(headers or {})}
            args: dict = {"method": str(method).upper(), "url": url, "headers": hdrs,
                          "params": {**self.params, **dict(params or {})},
                          "timeout": (timeout.timeout if isinstance(timeout, Timeout) else timeout) or self.timeout,
                          "follow_redirects": self.follow_redirects if follow_redirects is None else follow_redirects}
            if json is not None:
                args["json"] = json
            else:
                if data is not None and content is None:
                    if isinstance(data, dict):
                        content = urlencode(data, doseq=True)
                        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
                    else:
                        content = data
                if content is not None:
                    raw = content.encode() if isinstance(content, str) else bytes(content)
                    args["content"] = base64.b64encode(raw).decode()
            try:
                reply = await call("http.request", args)
            except HTTPException as exc:
                if exc.status_code == 504:
                    raise TimeoutException(str(exc)) from None
                raise ConnectError(str(exc)) from None
            except TimeoutError as exc:
                raise TimeoutException(str(exc)) from None
            resp = Response(reply.get("status_code", 0), reply.get("headers") or {},
                            base64.b64decode(reply.get("content") or ""), reply.get("url") or url)
            return resp

        async def get(self, url, **kw):
            return await self.request("GET", url, **kw)

        async def head(self, url, **kw):
            return await self.request("HEAD", url, **kw)

        async def options(self, url, **kw):
            return await self.request("OPTIONS", url, **kw)

        async def delete(self, url, **kw):
            return await self.request("DELETE", url, **kw)

        async def post(self, url, **kw):
            return await self.request("POST", url, **kw)

        async def put(self, url, **kw):
            return await self.request("PUT", url, **kw)

        async def patch(self, url, **kw):
            return await self.request("PATCH", url, **kw)

    for obj in (HTTPError, RequestError, ConnectError, TimeoutException, HTTPStatusError, Headers, Timeout, Response,
                AsyncClient):
        obj.__module__ = AGENT_MODULE
        setattr(mod, obj.__name__, obj)
    vars(mod).update(ReadTimeout=TimeoutException, ConnectTimeout=TimeoutException)
    return mod

