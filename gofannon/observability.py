"""Observability: the request context (request id, user, route), logging set-up with secret redaction,
and events (redacted, logged, and handed to ``record_event`` plugins).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
import time
from contextlib import nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ContextManager, Mapping, Protocol, TextIO

from gofannon.ids import random_hex
from gofannon.jsontext import encoder
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

log = logging.getLogger("gofannon.events")

#: Request ids a caller may choose: bounded and of a charset that is safe in headers, logs and JSON.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=\-]{0,127}")


class RequestContext:
    """What log lines and events of one request carry; filled in by the kernel middleware."""

    __slots__ = ("request_id", "user_id", "route")

    def __init__(self, request_id: str, route: str | None = None) -> None:
        self.request_id = request_id
        self.user_id: str | None = None
        self.route = route


#: The current request's context. Tasks spawned while handling a request inherit it, so their log
#: lines and events keep the request's id.
CURRENT: ContextVar[RequestContext | None] = ContextVar("gofannon_request", default=None)


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is well formed (1-128 safe characters), else a new id."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return random_hex(12)


def current_request_id() -> str | None:
    ctx = CURRENT.get()
    return ctx.request_id if ctx is not None else None


# -- tracing -------------------------------------------------------------------------------------------
class SpanHandle(Protocol):
    """What code inside a span may do with it: add attributes, mark it failed."""

    def set(self, key: str, value: Any) -> None: ...

    def error(self, message: str) -> None: ...


class Tracer(Protocol):
    """A tracing plugin (the bundled ``otel`` one): spans around work, and the context a job carries."""

    def span(self, name: str, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None) -> ContextManager[SpanHandle]: ...

    def carrier(self) -> dict[str, str]: ...


class _NoSpan:
    def set(self, key: str, value: Any) -> None:
        return None

    def error(self, message: str) -> None:
        return None


_NO_SPAN = _NoSpan()
#: The installed tracer, if any (at most one is used). Empty means tracing costs one list check.
TRACERS: list[Tracer] = []


#: While an ``llm_request`` event is recorded: the call's messages and the answer (content, tool calls), for a
#: tracer the operator told to capture them (never put on the event itself, which logs and metrics also see).
LLM_CONTENT: ContextVar[tuple[Any, Any] | None] = ContextVar("gofannon_llm_content", default=None)


def span(name: str, attributes: Mapping[str, Any] | None = None,
         carrier: Mapping[str, str] | None = None) -> ContextManager[SpanHandle]:
    """A span around a piece of work, child of the current one (or of ``carrier``, a context that came
    with a job from another process); a no-op without a tracer."""
    if not TRACERS:
        return nullcontext(_NO_SPAN)
    return TRACERS[0].span(name, attributes or {}, carrier)


def job_context() -> dict[str, str] | None:
    """What a job submitted now carries to the process that runs it: the request id and trace context."""
    ctx = CURRENT.get()
    carried: dict[str, str] = {"requestId": ctx.request_id} if ctx is not None else {}
    if TRACERS:
        carried.update(TRACERS[0].carrier())
    return carried or None

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("api_token", re.compile(r"\bgft_[0-9a-f]{32}_[A-Za-z0-9_\-]{20,}")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b")),
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{10,}")),
    ("openai_key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{16,}")),
    ("aws_key_id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("google_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}")),
    ("slack_token", re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}")),
    ("stripe_key", re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")),
    ("private_key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)")),
    ("secret", re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)\b(\s*[=:]\s*)([^\s,;\"']{6,})")),
]
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


#: For each pattern but ``secret``: strings one of which every match contains. Looking for them with ``in`` is far
#: cheaper than a regular expression's search (Python's ``re`` tries every alternative at every position), and a
#: pattern whose strings are absent cannot match, so it is skipped.
_NEEDS: dict[str, tuple[str, ...]] = {
    "api_token": ("gft_",), "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), "anthropic_key": ("sk-ant-",),
    "openai_key": ("sk-",), "aws_key_id": ("AKIA", "ASIA"), "google_key": ("AIza",), "slack_token": ("xox",),
    "stripe_key": ("rk_live_", "rk_test_", "sk_live_", "sk_test_"), "jwt": ("eyJ",), "private_key": ("-----BEGIN ",),
}
_ALL_NEEDS = tuple(needle for needles in _NEEDS.values() for needle in needles)
#: ``secret`` matches one of these names, standing alone (``\b``), then ``=`` or ``:``.
_SECRET_NAMES = ("password", "passwd", "secret", "token", "apikey", "api_key", "api-key")
_SECRET_START = re.compile(r"(?i)\b(?:password|passwd|secret|token|api[_-]?key)\b\s*[=:]")
#: The shortest text any pattern can match (``token=abcdef``).
_SHORTEST_SECRET = 12
_HEX_DIGITS = "0123456789abcdef"


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _names_a_secret(text: str) -> bool:
    """Whether ``secret`` can match: one of its names standing alone, then ``=`` or ``:`` after spaces. (Every
    ``llm_request`` event says ``inputTokens``: the name alone is not enough.) Checked by hand on ASCII text,
    where lower-casing and word characters are simple; any other text is searched with the pattern's start."""
    if not text.isascii():
        return _SECRET_START.search(text) is not None
    low = text.lower()
    size = len(low)
    for name in _SECRET_NAMES:
        at = low.find(name)
        while at >= 0:
            end = at + len(name)
            if (at == 0 or not _word(low[at - 1])) and (end == size or not _word(low[end])):
                while end < size and low[end].isspace():
                    end += 1
                if end < size and low[end] in "=:":
                    return True
            at = low.find(name, at + 1)
    return False


def redact(text: str) -> str:
    if len(text) < _SHORTEST_SECRET:
        return text
    secret = _names_a_secret(text)
    if not secret and not any(needle in text for needle in _ALL_NEEDS):
        return text  # the usual case: one pass of cheap checks
    for kind, pattern in _PATTERNS:
        if kind == "secret":
            if secret or _names_a_secret(text):
                text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED:{kind}]", text)
        elif any(needle in text for needle in _NEEDS[kind]):
            text = pattern.sub(f"[REDACTED:{kind}]", text)
    return text


def _clean(value: Any) -> Any:
    """An event's field as its log line and the ``record_event`` sinks see it: every string (keys too) through
    the log handler's whole redaction (``scrub``), and a value under a key naming a credential header hidden
    whole. (The handler would hide that value in the line, ``"Authorization": "..."``; field by field, nothing
    else in a line of JSON can spread a secret over two fields.) So an event's line is not searched again."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        cleaned: dict[str, Any] = {}
        for k, v in value.items():
            key, credential = _KEYS.get(k) or _key(k)
            cleaned[key] = "[REDACTED]" if credential and v is not None and not isinstance(v, (dict, list, tuple)) \
                else _clean(v)
        return cleaned
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return scrub(str(value))


#: A key whose value a log line would show as a credential header's (what the handler's header pattern hides).
_CREDENTIAL_KEY = re.compile(r"(?i)\b(?:authorization|x-admin-password|cookie|api-key)$")
#: Keys seen before (events use a small vocabulary): their clean text, and whether they name a credential.
_KEYS: dict[str, tuple[str, bool]] = {}


def _key(key: Any) -> tuple[str, bool]:
    text = scrub(key if isinstance(key, str) else str(key))
    found = (text, _CREDENTIAL_KEY.search(text) is not None)
    if isinstance(key, str):
        if len(_KEYS) >= _CLEAN_MAX:
            _KEYS.clear()
        _KEYS[key] = found
    return found


#: An event as its log line shows it: ``json.dumps(event, default=str)``, with the encoder built once.
_event_line = encoder(ensure_ascii=True, default=str, separators=(", ", ": "))


def record(kernel: "Kernel", event_type: str, message: str = "", *, level: str = "INFO",
           user_id: str | None = None, service: str = "user-service", metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    event = {
        "timestamp": now_iso(),
        "level": str(level).upper(),
        "eventType": scrub(str(event_type)),
        "service": scrub(str(service)),
        "userId": user_id,
        "message": scrub(str(message)),
        "metadata": _clean(metadata or {}),
    }
    ctx = CURRENT.get()
    if ctx is not None:
        event["requestId"] = scrub(ctx.request_id)
        if user_id is None and ctx.user_id is not None:
            event["userId"] = ctx.user_id
    if event["userId"] is not None:
        event["userId"] = scrub(str(event["userId"]))
    py_level = _LEVELS.get(event["level"], 20)
    if log.isEnabledFor(py_level):
        _log_line(py_level, f"{event['eventType']} {_event_line(event)}")
    _to_sinks(kernel, event)
    return event


def _to_sinks(kernel: "Kernel", event: dict[str, Any]) -> None:
    """Hand the event to the ``record_event`` plugins. Called directly, in pluggy's order (last registered first),
    when every one is a plain implementation taking ``event`` (pluggy's own dispatch is most of a cheap sink's
    cost); otherwise through the hook. A sink that fails is logged, and the others still get the event."""
    hook = kernel.pm.hook.record_event
    impls = hook.get_hookimpls()
    known = getattr(kernel, "_event_sinks", None)
    if known is None or known[0] != impls:
        plain = all(not impl.hookwrapper and not impl.wrapper and tuple(impl.argnames) == ("event",) for impl in impls)
        known = (impls, [impl.function for impl in reversed(impls)] if plain else None)
        kernel._event_sinks = known  # type: ignore[attr-defined]
    sinks = known[1]
    if sinks is None:
        try:
            hook(event=event)
        except Exception:  # noqa: BLE001 - a broken sink must not break the request
            log.exception("record_event plugin failed")
        return
    for sink in sinks:
        try:
            sink(event)
        except Exception:  # noqa: BLE001 - a broken sink must not break the request (nor the other sinks)
            log.exception("record_event plugin failed")


def record_soon(kernel: "Kernel", event_type: str, message: str = "", **kw: Any) -> None:
    """``record``, run just after the event loop's current step instead of now: for events of a request's hot path
    (``llm_request`` on ``/v1``), whose answer is written in that same step, so the answer does not wait for
    redaction, logging and the ``record_event`` plugins. The request's context (its id, the current span, the
    captured LLM content) goes with it. Outside a running loop it is recorded now."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        record(kernel, event_type, message, **kw)
        return
    loop.call_soon(_record_quietly, kernel, event_type, message, kw)


def _record_quietly(kernel: "Kernel", event_type: str, message: str, kw: dict[str, Any]) -> None:
    try:
        record(kernel, event_type, message, **kw)
    except Exception:  # noqa: BLE001 - nobody is left to hear it: log, never break the loop
        log.exception("could not record the %s event", event_type)


# -- logging -------------------------------------------------------------------------------------------
#: Credentials as they appear in headers and configuration dumps: the value after the name is hidden.
_HEADER_SECRET = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-admin-password|cookie|set-cookie|x-api-key|api-key)"
    r"(['\"]?\s*[:=]\s*['\"]?)((?:bearer|basic|token)\s+)?([^\s'\",;]+)"
)
#: What every ``_HEADER_SECRET`` match contains, lower-cased.
_HEADER_WORDS = ("authorization", "x-admin-password", "cookie", "api-key")
_BEARER = re.compile(r"(?i)\b(bearer)\s+([A-Za-z0-9._~+/=\-]{8,})")
#: A password inside a URL (``postgresql://user:secret@host/db``, ``redis://:secret@host``).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/@\s]*:)([^@\s/]+)(@)")
#: Settings and environment variables whose values are secrets, by name.
_SECRET_NAME = re.compile(r"(?i)(_API_KEY|_SECRET|_SECRET_KEY|_TOKEN|PASSWORD|_ACCESS_KEY)$|_TOKEN_|_API_KEY_")


def configured_secrets(settings: Any) -> list[str]:
    """Secret values the process knows (API keys in the environment, the secret key, passwords), longest
    first, so a log line that quotes one verbatim can be cleaned even when no pattern knows its shape."""
    found: set[str] = set()
    environ = getattr(settings, "environ", None) or {}
    for name, value in environ.items():
        if _SECRET_NAME.search(name) and isinstance(value, str) and len(value) >= 8:
            found.add(value)
    for attr in ("secret_key", "admin_panel_password", "metrics_token"):
        value = getattr(settings, attr, None)
        if isinstance(value, str) and len(value) >= 8:
            found.add(value)
    return sorted(found, key=len, reverse=True)


class Redactor:
    """Hides credentials in text: known token shapes, header values, and the configured secrets."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.secrets = list(secrets or [])

    def __call__(self, text: str) -> str:
        for value in self.secrets:
            if value in text:
                text = text.replace(value, "[REDACTED:configured]")
        if not text.strip(_HEX_DIGITS):  # hex alone (a request id, a digest): no pattern below can match it
            return text
        # Each pattern runs only when its words are there (ASCII text: ``lower`` is exact there; any other text
        # is searched in full).
        low = text.lower() if text.isascii() else None
        if low is None or any(word in low for word in _HEADER_WORDS):
            text = _HEADER_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}[REDACTED]", text)
        if low is None or "bearer" in low:
            text = _BEARER.sub(lambda m: f"{m.group(1)} [REDACTED]", text)
        if "://" in text:
            text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}[REDACTED]{m.group(3)}", text)
        return redact(text)


#: The log handler's redaction (``configure_logging`` sets it, with the configured secrets).
_REDACTOR = Redactor()
#: Strings ``scrub`` found clean (an event's keys, types, providers, models and users repeat): not searched again.
_CLEAN: dict[str, None] = {}
_CLEAN_MAX = 4096
#: The shortest text the handler's redaction can change (``a://:p@``, a URL's password; a configured secret has
#: at least 8 characters).
_SHORTEST_REDACTABLE = 7


def scrub(text: str) -> str:
    """``text`` as the log handler writes it: configured secrets, credential headers, bearer tokens, URL passwords
    and known token shapes hidden (``Redactor``)."""
    if len(text) < _SHORTEST_REDACTABLE or text in _CLEAN:
        return text
    cleaned = _REDACTOR(text)
    if cleaned == text and len(text) <= 200:
        if len(_CLEAN) >= _CLEAN_MAX:
            _CLEAN.clear()
        _CLEAN[text] = None
    return cleaned


class _EventRecord(logging.LogRecord):
    """An event's log record: its line is made of fields ``scrub`` cleaned, so the handler's filter does not
    search it again."""

    redacted = True


class _Process:
    """This process's id and name as log records carry them, looked up once (and again after a fork)."""

    pid: int | None = None
    name = "MainProcess"

    @classmethod
    def reset(cls) -> None:
        cls.pid = None


os.register_at_fork(after_in_child=_Process.reset)


def _log_line(level: int, text: str) -> None:
    """Log an event's (clean) line on the ``gofannon.events`` logger: a record like ``Logger.log`` makes, without
    looking up the caller (the line names its event) or the process on every line. With another record factory
    installed (``logging.setLogRecordFactory``), through ``Logger.log`` as usual."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        log.log(level, "%s", text)
        return
    if _Process.pid is None:
        _Process.pid = os.getpid()
        mp = sys.modules.get("multiprocessing")
        if mp is not None:
            try:
                _Process.name = mp.current_process().name
            except Exception:  # noqa: BLE001 - as logging itself does
                pass
    now = time.time()
    record = _EventRecord.__new__(_EventRecord)
    record.__dict__.update(_EVENT_RECORD)
    record.msg = text
    record.levelno = level
    record.levelname = logging.getLevelName(level)
    record.created = now
    record.msecs = int((now - int(now)) * 1000) + 0.0
    record.relativeCreated = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
    if logging.logThreads:
        record.thread = threading.get_ident()
        record.threadName = threading.current_thread().name
    if logging.logProcesses:
        record.process = _Process.pid
    if logging.logMultiprocessing:
        record.processName = _Process.name
    log.handle(record)


#: What every event record carries that does not change between lines.
_EVENT_RECORD: dict[str, Any] = {
    "name": log.name, "args": (), "pathname": __file__, "filename": os.path.basename(__file__),
    "module": "observability", "exc_info": None, "exc_text": None, "stack_info": None,
    "lineno": record.__code__.co_firstlineno,
    "funcName": "record", "thread": None, "threadName": None, "processName": None, "process": None,
    "taskName": None,  # Python 3.12's LogRecord has it (formats may name it)
}


class ContextFilter(logging.Filter):
    """Adds the request context to every record and redacts its message and traceback once, so every
    formatter and handler downstream sees the clean text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = CURRENT.get()
        record.request_id = ctx.request_id if ctx is not None else None
        record.user_id = ctx.user_id if ctx is not None else None
        record.route = ctx.route if ctx is not None else None
        if not getattr(record, "redacted", False):  # an event's line is clean already (``_clean``)
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string is logged as written
                message = str(record.msg)
            record.msg, record.args = self.redactor(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


class TextFormatter(logging.Formatter):
    """The readable default: ``time LEVEL logger [request_id=...]: message`` (the id only inside a request)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s")
        self._second: int | None = None
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``logging.Formatter``'s default time (``2026-11-30 11:36:21,123``), its seconds formatted once a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.request_tag = f" [request_id={rid}]" if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, user_id, route (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "user_id": getattr(record, "user_id", None),
            "route": getattr(record, "route", None),
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, default=str, ensure_ascii=False)


JsonFormatter.converter = __import__("time").gmtime  # type: ignore[assignment]


#: What a request aiohttp's parser refused is told, and logged as, by the parser's exception: never the parser's
#: own text, which quotes the offending bytes (a header line or a URL may carry a credential).
_MALFORMED = {
    "LineTooLong": "a request line or header is too long",
    "BadHttpMethod": "unknown HTTP method",
    "BadStatusLine": "malformed request line",
    "InvalidHeader": "malformed header",
    "InvalidURLError": "malformed URL",
    "ContentLengthError": "malformed Content-Length or body",
    "TransferEncodingError": "malformed chunked body",
    "ContentEncodingError": "body encoding not understood",
    "DecompressSizeError": "body too large once decompressed",
}


def malformed_reason(exc: BaseException | None) -> str:
    """The problem with a request the HTTP parser refused, in words that quote none of it."""
    return _MALFORMED.get(type(exc).__name__, "malformed HTTP request")


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a broken chunk) at ERROR with a traceback,
    though it answers the client 400: any client could fill the operator's log with them. Such records become
    one INFO line naming the problem (not the offending bytes, which may carry a credential)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        from aiohttp.http_exceptions import HttpProcessingError

        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "refused a malformed request from %s (%s %s: %s)", (
            peer, getattr(exc, "code", 400), type(exc).__name__, malformed_reason(exc))
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger().isEnabledFor(logging.INFO)


def configure_logging(settings: Any, stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger to one handler in ``GOFANNON_LOG_FORMAT`` (``text`` or ``json``) that adds
    the request context and redacts secrets. Replaces handlers a previous call installed. Returns it."""
    fmt = str(getattr(settings, "log_format", "text") or "text").lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"GOFANNON_LOG_FORMAT={fmt!r}: use text or json")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    global _REDACTOR
    _REDACTOR = Redactor(configured_secrets(settings))
    _CLEAN.clear()
    _KEYS.clear()
    handler.addFilter(ContextFilter(_REDACTOR))
    handler._gofannon = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gofannon", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(str(getattr(settings, "log_level", "INFO")).upper())
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())
    return handler
