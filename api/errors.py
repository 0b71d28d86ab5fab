"""422 bodies that name the field, the value and the rule."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

_RULES = {"extra_forbidden": "unknown field: not part of this request's schema"}


def describe(error: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or "body"
    rule = _RULES.get(error.get("type", ""), error.get("msg", "invalid"))
    rule = rule.removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no NaN or Infinity; the text still shows what was sent
    return {
        "field": field,
        "value": value,
        "rule": rule,
        "message": f"{field}: {rule} (got {value!r})",
    }


async def validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content=jsonable_encoder({"detail": [describe(e) for e in exc.errors()]}))
