"""JSON parsed with an explicit stack: any nesting depth, no recursion.

TF Serving parses a REST body with rapidjson's `kParseIterativeFlag` (tensorflow_serving/util/
json_tensor.cc ParseJson, since commit 6cb01316 "Improve handling of large JSON requests: iteratively
parse JSON"), so it has no nesting limit: its test DeeplyNestedWellFormed accepts 500,000 nested
arrays under a key it ignores, and an unclosed one is a parse error (400). Python's own decoder
recurses and raises RecursionError a thousand levels down, which the REST front end answered as 500
"Internal error" (issue 29: a body of 200,000 `[`). `raw_decode` is the fallback for that case: the
same values and the same error messages and offsets as `json.JSONDecoder().raw_decode` (its string
scanner and number pattern), at Python speed (a cost in proportion to the body's bytes).
"""
from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from typing import Any, Tuple

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = json.scanner.NUMBER_RE
_scanstring = json.decoder.scanstring
_CONSTANTS = (("null", None), ("true", True), ("false", False), ("NaN", float("nan")),
              ("Infinity", float("inf")), ("-Infinity", float("-inf")))


def _skip(text: str, idx: int) -> int:
    return _WHITESPACE.match(text, idx).end()


def _key(text: str, idx: int) -> Tuple[str, int]:
    """A member's name and the index after its colon (and the whitespace after it)."""
    if text[idx:idx + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, idx)
    key, idx = _scanstring(text, idx + 1)
    idx = _skip(text, idx)
    if text[idx:idx + 1] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, idx)
    return key, _skip(text, idx + 1)


def _scalar(text: str, idx: int) -> Tuple[Any, int]:
    if text[idx:idx + 1] == '"':
        return _scanstring(text, idx + 1)
    match = _NUMBER.match(text, idx)
    if match is not None and match.end() > idx:
        integer, fraction, exponent = match.groups()
        if fraction or exponent:
            return float(integer + (fraction or "") + (exponent or "")), match.end()
        return int(integer), match.end()
    for word, value in _CONSTANTS:
        if text.startswith(word, idx):
            return value, idx + len(word)
    raise json.JSONDecodeError("Expecting value", text, idx)


def raw_decode(text: str, idx: int = 0) -> Tuple[Any, int]:
    """(value, end) of the JSON value starting at `idx`, as `json.JSONDecoder().raw_decode` (which
    skips no whitespace before it); json.JSONDecodeError with its messages when it is not JSON."""
    stack: list = []  # open containers: [list or dict, the pending member's name]
    while True:
        opener = text[idx:idx + 1]
        if opener == "[":
            idx = _skip(text, idx + 1)
            if text[idx:idx + 1] == "]":
                value, idx = [], idx + 1
            else:
                stack.append([[], None])
                continue
        elif opener == "{":
            idx = _skip(text, idx + 1)
            if text[idx:idx + 1] == "}":
                value, idx = {}, idx + 1
            else:
                key, idx = _key(text, idx)
                stack.append([{}, key])
                continue
        else:
            value, idx = _scalar(text, idx)
        while True:  # hand the value to its container; close what ends here
            if not stack:
                return value, idx
            container, key = stack[-1]
            if key is None:
                container.append(value)
            else:
                container[key] = value
            idx = _skip(text, idx)
            char = text[idx:idx + 1]
            if char == ",":
                idx = _skip(text, idx + 1)
                if key is not None:
                    stack[-1][1], idx = _key(text, idx)
                break
            if char == ("]" if key is None else "}"):
                value, idx = container, idx + 1
                stack.pop()
                continue
            raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
