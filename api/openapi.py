"""The OpenAPI schema says every answer a client must handle, not only the happy one.

Which refusals a route can give follows from what its schema already says: a route with a security requirement
can answer 401 (403 when it asks for the `admin` scope), one with an id in its path 404, one with a body 413,
one with a body or parameters 422. The few that depend on what
the route does (409 for a reused Idempotency-Key or an ambiguous id prefix, 429 for a tenant's quotas) are
listed here by route. /docs is served from the farm's own files (fastapi-offline), so it works offline.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class Message(BaseModel):
    detail: str = Field(description="what went wrong, in a sentence")


class FieldProblem(BaseModel):
    field: str = Field(
        description="the request field (or catalog column) at fault, e.g. `width` or `renditions.0.width`"
    )
    value: Any = Field(None, description="the value that was sent")
    rule: str = Field(description="the rule it breaks")
    message: str = Field(description="field, rule and value in one line")
    row: int | None = Field(None, description="catalogs: the 1-based data row")
    line: int | None = Field(None, description="catalogs: the line in the uploaded file")
    column: str | None = Field(None, description="catalogs: the column")


class Refusal(BaseModel):
    detail: list[FieldProblem] = Field(description="every problem found (catalogs: up to 50 and a count of the rest)")


GENERIC: dict[int, tuple[str, type[BaseModel]]] = {
    401: ("no API key, or an unknown or revoked one (when the farm requires keys)", Message),
    403: ("the route needs an admin API key", Message),
    404: ("no such id for this tenant (another tenant's ids answer the same)", Message),
    413: (
        "the body is over ZFARM_MAX_JSON_BYTES / ZFARM_MAX_UPLOAD_BYTES, or the catalog over ZFARM_MAX_BATCH_ROWS",
        Message,
    ),
    422: ("a bad value: each problem names the field, the value and the rule", Refusal),
}
# (method, path) -> {status: description} for answers that depend on what the route does.
SPECIFIC: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/v1/jobs"): {
        409: "this Idempotency-Key was used for a different request",
        429: "the tenant's quota (queued jobs or submits per minute) is used up; see Retry-After",
    },
    ("POST", "/v1/batches"): {
        409: "this Idempotency-Key was used for a different request",
        429: "the tenant's quota (queued jobs or submits per minute) is used up; see Retry-After",
    },
    ("DELETE", "/v1/jobs/{job_id}"): {409: "the job has already ended"},
    ("POST", "/v1/batches/{batch_id}/items/{key}/approve"): {409: "the row has not succeeded"},
    ("POST", "/v1/batches/{batch_id}/items/{key}/reject"): {409: "the row has not ended"},
    ("POST", "/v1/batches/{batch_id}/items/{key}/reroll"): {409: "the row has not ended"},
}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    security = operation.get("security") or []
    if security:
        found[401] = None
    if any("admin" in scopes for requirement in security for scopes in requirement.values()):
        found[403] = None
    if "{" in path:
        found[404] = None
    if "requestBody" in operation:
        found[413] = None
    if "requestBody" in operation or operation.get("parameters"):
        found[422] = None
    for status, description in SPECIFIC.get((method.upper(), path), {}).items():
        found[status] = description
    return found


def _add_responses(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    documented: tuple[type[BaseModel], ...] = (Message, FieldProblem, Refusal)
    for model in documented:
        components.update(model.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {}))
        components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status, description in _statuses(method, path, operation).items():
                text, model = GENERIC.get(status, (description or "", Message))
                if status == 422 or str(status) not in responses:
                    body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
                    responses[str(status)] = {"description": description or text, "content": body}


def install(app: FastAPI) -> None:
    """Replaces app.openapi with one that adds the refusals (built once, on first request, as FastAPI does)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _add_responses(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
