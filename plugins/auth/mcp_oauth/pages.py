"""The HTML of the authorization step: consent form, login choice, error page. Everything echoed is escaped."""

from __future__ import annotations

from html import escape
from typing import Any, Iterable
from urllib.parse import urlsplit

from aiohttp import web

#: Pages of the authorization step must not be framed (clickjacking) or cached.
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem}dt{font-weight:600}dd{margin:0 0 .6rem}"
)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")
    return web.Response(status=status, text=text, content_type="text/html", headers=HEADERS)


def consent(*, client_name: str, client_id: str, redirect_uri: str, resource: str, user: str,
            action: str, fields: Iterable[tuple[str, str]]) -> web.Response:
    """The consent form: every OAuth parameter (and the CSRF token) a hidden input, then allow / deny."""
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields)
    where = urlsplit(redirect_uri).netloc or redirect_uri
    body = (
        f"<h1>Allow {escape(client_name)}?</h1>"
        f"<p><strong>{escape(client_name)}</strong> asks to use Gofannon as <strong>{escape(user)}</strong>: "
        "to list the agents you may call and run them as you (runs are charged to your allowance).</p>"
        "<dl>"
        f"<dt>Application</dt><dd>{escape(client_name)} <small>({escape(client_id)})</small></dd>"
        f"<dt>Access to</dt><dd>{escape(resource)}</dd>"
        f"<dt>You will be sent back to</dt><dd>{escape(where)}</dd>"
        "</dl>"
        f'<form method="post" action="{escape(action)}">{hidden}'
        '<button name="decision" value="allow">Allow</button>'
        '<button name="decision" value="deny">Deny</button>'
        "</form>"
        "<p><small>You can end this access at any time: it is listed with your API tokens.</small></p>"
    )
    return _page(f"Allow {client_name}?", body)


def choose_login(providers: list[tuple[str, str, str]]) -> web.Response:
    """``providers``: (type, display name, login URL)."""
    items = "".join(f'<li><a href="{escape(url)}">{escape(name)}</a></li>' for _t, name, url in providers)
    return _page("Sign in", f"<h1>Sign in to continue</h1><ul>{items}</ul>")


def error(title: str, message: str, status: int = 400, extra: dict[str, Any] | None = None) -> web.Response:
    body = f"<h1>{escape(title)}</h1><p>{escape(message)}</p>"
    for key, value in (extra or {}).items():
        body += f"<p><small>{escape(key)}: {escape(str(value))}</small></p>"
    return _page(title, body, status)
