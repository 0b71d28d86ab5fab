"""422 bodies that name the field, the value and the rule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from api.strict_json import printable
from api.suggest import did_you_mean, fields_at

_RULES = {"extra_forbidden": "unknown field: not part of this request's schema"}


def describe(error: Mapping[str, Any], model: type[BaseModel] | None = None) -> dict[str, Any]:
    path = [p for p in error.get("loc", ()) if p not in ("body", "query", "path")]
    loc = [str(p) for p in path]
    field = ".".join(loc) or "body"
    rule = _RULES.get(error.get("type", ""), error.get("msg", "invalid"))
    rule = rule.removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden" and path:
        rule += did_you_mean(str(path[-1]), fields_at(model, path))
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no NaN or Infinity; the text still shows what was sent
    value = printable(value)  # a lone surrogate cannot be written as UTF-8: echo it escaped
    return {
        "field": field,
        "value": value,
        "rule": rule,
        "message": f"{field}: {rule} (got {value!r})",
    }


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    model = _body_model(request)
    content = {"detail": [describe(e, model) for e in exc.errors()]}
    return JSONResponse(status_code=422, content=jsonable_encoder(content))


def _body_model(request: Request) -> type[BaseModel] | None:
    """The request model of the route that refused the body, for naming the fields it does know."""
    route = request.scope.get("route")
    body = getattr(route, "body_field", None)
    annotation = getattr(getattr(body, "field_info", None), "annotation", None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def refuse_invalid(exc: ValidationError, model: type[BaseModel]) -> HTTPException:
    """For bodies a route validates itself (a catalog as JSON or a form): the same 422 as the framework's."""
    return HTTPException(422, detail=jsonable_encoder([describe(e, model) for e in exc.errors()]))
