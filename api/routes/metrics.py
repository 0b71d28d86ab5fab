from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import AdminDep
from api.strict_route import StrictRoute

router = APIRouter(tags=["metrics"], route_class=StrictRoute)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request, _admin: AdminDep) -> Response:
    """Prometheus text format; with API keys on, scrape with an admin key (Authorization: Bearer ...)."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
