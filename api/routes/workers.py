from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.auth import AdminDep
from api.deps import SessionDep, SettingsDep
from api.schemas import WorkerList, WorkerOut
from api.strict_route import StrictRoute
from models import Worker
from models.loras import held_adapters
from models.workers import shown_state

router = APIRouter(prefix="/v1/workers", tags=["workers"], route_class=StrictRoute)


@router.get("", response_model=WorkerList)
def list_workers(session: SessionDep, settings: SettingsDep, _admin: AdminDep) -> WorkerList:
    """Workers with their state: a stale heartbeat reads `offline`; `failed` (could not start) keeps its reason."""
    out = []
    rows = session.execute(select(Worker, shown_state(settings.worker_offline_after_seconds)).order_by(Worker.name))
    for w, state in rows:
        fields = {name: getattr(w, name) for name in WorkerOut.model_fields if name != "adapters"}
        item = WorkerOut(**fields, adapters=held_adapters(w.adapters))
        item.state = state
        out.append(item)
    return WorkerList(workers=out)
