"""The JSON text the API answers with: compact, UTF-8 as is, no NaN, and ``str()`` of what JSON cannot hold.
One definition below the web layer, so services that cache encoded answers (``GET /agents``) encode alike.

``encoder`` builds a compact encoding function once: ``json.dumps`` (and ``JSONEncoder.encode``) build the C
encoder anew for every call, which is a third of the cost of encoding a small object.
"""

from __future__ import annotations

import json
import math
import re
from json import encoder as _stdlib
from typing import Any, Callable


def encoder(*, ensure_ascii: bool, allow_nan: bool = True, default: Callable[[Any], Any] | None = None,
            separators: tuple[str, str] = (",", ":")) -> Callable[[Any], str]:
    """A function encoding like ``json.dumps(obj, separators=separators, ensure_ascii=..., allow_nan=...,
    default=...)``, without its per-call set-up. (It does not look for reference cycles: a cyclic object is a
    ``RecursionError`` instead of a ``ValueError``; nothing the kernel encodes is cyclic.)"""
    make = getattr(_stdlib, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python without the C accelerator
        return json.JSONEncoder(ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=separators,
                                default=default).encode
    strings = _stdlib.encode_basestring_ascii if ensure_ascii else _stdlib.encode_basestring
    item, key = separators
    chunks = make(None, default or _refuse, strings, None, key, item, False, False, allow_nan)

    def encode(obj: Any) -> str:
        return "".join(chunks(obj, 0))

    return encode


def _refuse(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


#: The API's answers: UTF-8 as is, no NaN, ``str()`` of anything else.
dumps = encoder(ensure_ascii=False, allow_nan=False, default=str)


def escape_surrogates(text: str) -> str:
    """JSON text that UTF-8 can hold: a character it cannot (an unpaired surrogate, which JSON's ``\\u`` escapes
    can produce: an agent's output, say) can only stand inside a string literal, so it becomes its own ``\\u``
    escape, which reads back as the same string. (Nothing to do, and nearly free, for ordinary text.)"""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return SURROGATE.sub(lambda m: "\\u%04x" % ord(m.group()), text)
    return text


def json_bytes(text: str) -> bytes:
    """JSON text as UTF-8 bytes for an answer. Half a surrogate pair becomes U+FFFD, the replacement character,
    instead of failing the answer: its ``\\u`` escape would be faithful, but strict parsers (pydantic's, so the
    MCP SDK's; Rust's, Go's) refuse it, and the text was never Unicode."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return SURROGATE.sub("\ufffd", text).encode()


def dumps_bytes(obj: Any) -> bytes:
    """``dumps(obj)`` as UTF-8 bytes (``json_bytes``). A float JSON cannot hold (NaN, an infinity) is written as
    ``null``, as JavaScript's ``JSON.stringify`` writes it, instead of failing the answer."""
    try:
        text = dumps(obj)
    except ValueError:
        text = dumps(_finite(obj))
    return json_bytes(text)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
#: Half a surrogate pair: text UTF-8 cannot hold.
SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"the JSON holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the JSON holds a number too large to represent ({text[:40]})")
    return value


#: Built once (``json.loads`` with an option builds a decoder per call); it refuses Python's NaN/Infinity and
#: numbers that would be infinity.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite_float)


def loads(raw: bytes) -> Any:
    """A request body's JSON. ValueError when it is not JSON, and when it holds what JSON's grammar allows but
    nothing after it can carry: text that is not Unicode (half of a surrogate pair from a ``\\u`` escape, or
    UTF-8-encoded; UTF-8 cannot hold it, PostgreSQL refuses it), a number too large for a float (``1e400``: it
    would be infinity), or Python's ``NaN``/``Infinity`` extensions."""
    # Decoded strictly (json.loads would let UTF-8-encoded surrogates through, with 'surrogatepass'); UTF-16 and 32
    # bodies are still read, as json.loads reads them.
    text = raw.decode("utf-8" if raw[:1] in b"{[" else json.detect_encoding(raw))
    try:
        data = _DECODER.decode(text)
    except RecursionError:  # the C decoder gives up near a thousand levels
        raise ValueError(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    # No deeper than it could be: fewer brackets than the limit cannot nest past it (a count is C-speed).
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth_over(data, MAX_DEPTH):
        raise ValueError(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None and _holds_surrogate(data):
        raise ValueError("the JSON holds text that is not valid Unicode (an unpaired surrogate escape)")
    return data


#: How deep a request body's JSON may nest (arrays and objects). Everything after the parse (validation, copies,
#: the store, redaction) may then walk it recursively without coming near Python's recursion limit; real
#: payloads (OpenAI's tool schemas included) nest a few levels.
MAX_DEPTH = 128


def _depth_over(data: Any, limit: int) -> bool:
    """Whether ``data`` nests arrays/objects more than ``limit`` deep (iterative: no recursion of its own)."""
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _holds_surrogate(data: Any) -> bool:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if SURROGATE.search(item) is not None:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False



def local_ref(doc: Any, ref: str, missing: Any = None) -> Any:
    """What a local JSON reference (``#/definitions/Args``, a JSON pointer after ``#``) points at inside ``doc``;
    ``missing`` when it is not local or leads nowhere."""
    if not ref.startswith("#/"):
        return missing
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node
