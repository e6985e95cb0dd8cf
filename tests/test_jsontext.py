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


def test_what_json_cannot_hold_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})
    assert encoder(ensure_ascii=True)({"x": float("inf")}) == '{"x":Infinity}'  # allowed where asked for
    with pytest.raises(TypeError):
        encoder(ensure_ascii=True)({"x": object()})
