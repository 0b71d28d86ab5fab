"""Strict JSON for everything a client sends: what `json.loads` lets through but the farm must refuse.

Python's json module takes the last of repeated keys, reads `NaN`, `Infinity` and `1e400` (an overflow) as
floats, decodes `\\u0000` and lone surrogates (`\\ud800`) into strings that PostgreSQL and UTF-8 cannot hold,
and recurses once per nesting level (100,000 levels raise RecursionError). Each of these is refused here as a
`JsonProblem` that names where it is (`rows.3.width`, the way 422 bodies name fields), the value and the rule.

The usual document has none of them, so the walk that finds out where is only taken when the parse met a
non-finite number or a repeated key, or the text has a `\\u0000` or surrogate escape (one regex search).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

# `\u0000` or any UTF-16 surrogate escape (a valid pair is fine, so these only mean "look closer").
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF][0-9a-fA-F]{2})")
NUL_RULE = "must not contain a NUL character (\\u0000)"
SURROGATE_RULE = "must not contain a lone UTF-16 surrogate: it is not a character and cannot be stored as UTF-8"
FINITE_RULE = "must be a finite number: NaN, Infinity and numbers beyond the float range are not numbers here"
DEPTH_RULE = "is nested too deeply: JSON here nests a few levels, not hundreds"


@dataclass(frozen=True)
class JsonProblem(Exception):
    where: str  # a dotted path (rows.3.width) or "body"
    value: Any
    rule: str


class _Repeated(dict[str, Any]):
    """An object in which some key appeared more than once (json.loads would keep the last silently)."""

    repeated: list[str]


@dataclass(frozen=True)
class _NonFinite:
    text: str  # as written: NaN, -Infinity, 1e400


def loads(data: str | bytes) -> Any:
    """The document, or JsonProblem; malformed JSON raises json.JSONDecodeError as json.loads does."""
    text = data if isinstance(data, str) else data.decode(json.detect_encoding(data))
    flagged = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal flagged
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        flagged = True
        marked = _Repeated(obj)
        marked.repeated = [k for k, n in Counter(k for k, _ in items).items() if n > 1]
        return marked

    def number(token: str) -> float | _NonFinite:
        nonlocal flagged
        value = float(token)
        if math.isfinite(value):
            return value
        flagged = True
        return _NonFinite(token)

    def constant(token: str) -> _NonFinite:
        nonlocal flagged
        flagged = True
        return _NonFinite(token)

    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_float=number, parse_constant=constant)
    except RecursionError as exc:
        raise JsonProblem("body", None, DEPTH_RULE) from exc
    if flagged or _SUSPECT_ESCAPE.search(text):
        check(doc)
    return doc


def check(doc: Any, root: str = "") -> None:
    """Raises JsonProblem for the first NUL, lone surrogate, non-finite number or repeated key in `doc`."""
    stack: list[tuple[str, Any]] = [(root, doc)]  # iterative: a deep document must not recurse here either
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if (rule := text_problem(value)) is not None:
                raise JsonProblem(where or "body", value, rule)
        elif isinstance(value, _NonFinite):
            raise JsonProblem(where or "body", value.text, FINITE_RULE)
        elif isinstance(value, dict):
            if isinstance(value, _Repeated):
                key = value.repeated[0]
                raise JsonProblem(_join(where, key), key, "this key appears more than once in its object")
            for key, item in value.items():
                if (rule := text_problem(key)) is not None:
                    raise JsonProblem(_join(where, key), key, f"a key {rule}")
                stack.append((_join(where, key), item))
        elif isinstance(value, list):
            stack.extend((_join(where, str(i)), item) for i, item in enumerate(value))


def text_problem(text: str) -> str | None:
    """The rule a text breaks (a NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return NUL_RULE
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_RULE
    return None


def printable(value: Any) -> Any:
    """`value` made safe to echo in a JSON answer: lone surrogates written as escapes (UTF-8 cannot carry them)."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
