from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from api.deps import SessionDep
from api.schemas import Health
from api.strict_route import StrictRoute
from core.storage import StorageError

router = APIRouter(tags=["health"], route_class=StrictRoute)


@router.get("/healthz", response_model=Health)
def healthz(session: SessionDep, request: Request, response: Response) -> Health:
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # report, do not raise: health answers even when parts are down
        database = f"error: {type(exc).__name__}"
    try:
        with request.app.state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        broker = "ok"
    except Exception as exc:
        broker = f"error: {type(exc).__name__}"
    try:
        request.app.state.storage.check()  # the bucket answers and takes the credentials (a HEAD)
        storage = "ok"
    except StorageError as exc:
        storage = f"error: {exc}"
    ok = database == "ok" and broker == "ok" and storage == "ok"
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "degraded", database=database, broker=broker, storage=storage)
