"""The API's JSON text and the prebuilt encoders: byte for byte what ``json.dumps`` with the same options gives."""

from __future__ import annotations

import datetime
import json

import pytest

from gofannon.jsontext import dumps, encoder

CASES = [{"a": 1, "b": [1, 2.5, None, True, False], "c": "é \u2028 \" \\ \n"}, [1, "x", {}], "plain", 3, -2.5, None,
         True, {"when": datetime.date(2020, 1, 2)}, {1: "an int key", 2.5: "a float key"}, {"deep": {"x": [{"y": "z"}]}},
         {"big": 10 ** 30, "tiny": 1e-300}]


@pytest.mark.parametrize("value", CASES)
def test_the_answers_encoding_is_json_dumps_with_its_options(value: object) -> None:
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    ascii_ = encoder(ensure_ascii=True, default=str)
    assert ascii_(value) == json.dumps(value, separators=(",", ":"), default=str)
    spaced = encoder(ensure_ascii=True, default=str, separators=(", ", ": "))  # json.dumps' own separators
    assert spaced(value) == json.dumps(value, default=str)


def test_what_json_cannot_hold_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    assert encoder(ensure_ascii=True)({"x": float("inf")}) == '{"x":Infinity}'  # allowed where asked for
    with pytest.raises(TypeError):
        encoder(ensure_ascii=True)({"x": object()})


def test_answers_never_fail_on_what_utf8_or_json_cannot_hold() -> None:
    from gofannon.jsontext import dumps_bytes, escape_surrogates

    assert json.loads(dumps_bytes({"x": float("inf"), "y": [float("nan"), 1.5]})) == {"x": None, "y": [None, 1.5]}
    assert json.loads(dumps_bytes({"t": "a\ud800b é"})) == {"t": "a\ufffdb é"}  # U+FFFD: strict parsers accept it
    assert json.loads(escape_surrogates(dumps({"t": "a\ud800b é"}))) == {"t": "a\ud800b é"}  # a store keeps it
    assert dumps_bytes({"t": "é 😀"}) == dumps({"t": "é 😀"}).encode()


@pytest.mark.parametrize("raw, ok", [
    (b'{"a": "\\ud83d\\ude00", "b": 1e300, "c": "1e999"}', True),
    (b'{"a": "\\\\ud800"}', True),  # an escaped backslash, then text: no surrogate
    (b'{"a": "x\\ud800"}', False), (b'{"\\udc00": 1}', False), (b'[1e400]', False), (b'[-1E+999]', False),
    (b'[NaN]', False), (b'{"a": -Infinity}', False), (b'[' + b'9' * 400 + b'.5]', False),
    (b'{"a": "x\xed\xa0\x80y"}', False),  # a surrogate UTF-8-encoded, no escape (json.loads lets it through)
    (b'{"a": "\xff"}', False), ('{"a": "é"}'.encode("utf-16"), True), (b'\xef\xbb\xbf{"a": 1}', True),
])
def test_loads_refuses_what_nothing_after_it_can_carry(raw: bytes, ok: bool) -> None:
    from gofannon.jsontext import loads

    if ok:
        assert loads(raw) == json.loads(raw)
    else:
        with pytest.raises(ValueError):
            loads(raw)
