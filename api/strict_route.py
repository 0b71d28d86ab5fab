"""Every route parses JSON strictly (api/strict_json.py), off the event loop when the body is large, and refuses
NUL characters in its path, query and form fields: what PostgreSQL cannot store is a 422 here, not a 500 from
the driver.

FastAPI's documented way to change how a route reads its request: an APIRoute subclass whose handler gets a
Request subclass. Every router of the API is made with `route_class=StrictRoute`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.datastructures import FormData, UploadFile

from api import strict_json
from api.strict_json import JsonProblem, printable

# Bodies above this are parsed in a worker thread: a 36 MB catalog takes seconds to parse, and the event loop
# serves every other request meanwhile. The parse calls back into Python per object, so the GIL changes hands.
OFF_LOOP_BYTES = 64 * 1024


def refusal(where: str, value: Any, rule: str) -> HTTPException:
    """A 422 shaped like the API's others: field, value, rule, message."""
    shown = printable(value)
    got = f" (got {shown!r})" if value is not None else ""
    return HTTPException(
        422, detail=[{"field": where, "value": shown, "rule": rule, "message": f"{where}: {rule}{got}"}]
    )


def parse_json(body: bytes) -> Any:
    try:
        return strict_json.loads(body)
    except JsonProblem as exc:
        raise refusal(exc.where, exc.value, exc.rule) from exc
    except UnicodeDecodeError as exc:
        raise refusal("body", None, f"must be JSON in UTF-8: {exc.reason} at byte {exc.start}") from exc


def check_form(form: FormData) -> None:
    """Form fields are text decoded from bytes (no surrogates can appear), but a NUL can."""
    for name, value in form.multi_items():
        for where, text in ((name, name), (name, value)):
            if isinstance(text, str) and "\x00" in text:
                raise refusal(where, text, strict_json.NUL_RULE)
        if isinstance(value, UploadFile) and value.filename and "\x00" in value.filename:
            raise refusal(name, value.filename, f"its file name {strict_json.NUL_RULE}")


class StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await run_in_threadpool(parse_json, body) if len(body) > OFF_LOOP_BYTES else parse_json(body)
        return self._json

    # Starlette's `form()` (and FastAPI's Form parameters) read through `_get_form`: every form is checked here.
    async def _get_form(self, **limits: Any) -> FormData:
        form = await super()._get_form(**limits)
        try:
            check_form(form)
        except HTTPException:
            await form.close()
            raise
        return form


class StrictRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            _check_path_and_query(request)
            return await handler(StrictRequest(request.scope, request.receive))

        return strict_handler


def _check_path_and_query(request: Request) -> None:
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise refusal(name, value, strict_json.NUL_RULE)
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise refusal(name, value, strict_json.NUL_RULE)
